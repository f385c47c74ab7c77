//! What the experiments (`fill`, `udp`) share: a session traced on the experiment's own
//! sockets while the experiment runs on its thread, and its report at the end.

use std::{io::Write, sync::mpsc};

use serde::Serialize;
use tokio::sync::Notify;
use trace_common::Filter;

use crate::{
    cli::TracerArgs,
    format::monotonic_ns,
    loader::LoadOptions,
    output,
    session::{EventHandler, Session},
    stop,
    trace::{self, Printer},
};

/// A session filtered to this process's sockets on `port`, with its event printer started.
pub struct Lab {
    pub session: Session,
    pub t0: u64,
}

impl Lab {
    /// `stacks`: what `--stacks` asked for (the experiments without it: `None`).
    pub fn start(
        port: u16,
        tracer: &TracerArgs,
        stacks: Option<&crate::cli::StackArgs>,
        verbose: u8,
        json: bool,
    ) -> anyhow::Result<(Self, Printer)> {
        let filter = Filter {
            pid: std::process::id(),
            port,
            ..Filter::default()
        };
        let opts = LoadOptions {
            filter,
            attach: tracer.attach,
            ring_bytes: tracer.ring_size,
            kernel_log: verbose > 0,
            aggregate: trace_common::agg::Level::Off,
            max_sockets: 1,
            stacks: stacks.map_or(trace_common::stacks::OFF, |s| s.mode()),
            max_stacks: stacks.map_or(1, |s| s.max_stacks),
        };
        let mut session = Session::start(&opts)?;
        let t0 = monotonic_ns();
        let stdout: Box<dyn Write> = Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout(),
        ));
        let mut printer = Printer::new(output::new_output(json, stdout, t0, true));
        if opts.stacks != trace_common::stacks::OFF {
            let mut names = session.tracer_mut().take_stacks()?;
            // The experiment's writer is this process.
            names.warm_up(Some(std::process::id()));
            printer.stacks = Some(crate::stacks::StackSink::new(names, opts.stacks));
        }
        printer
            .out
            .start(session.tracer().mode.name(), &session.tracer().refused)?;
        Ok((Self { session, t0 }, printer))
    }

    /// Streams events into `handler` until `done` completes (the experiment has ended) or the
    /// output breaks.
    pub async fn run(
        &mut self,
        handler: &mut impl EventHandler,
        done: impl Future<Output = ()>,
        broken: &Notify,
    ) -> anyhow::Result<()> {
        let finished = async {
            tokio::select! {
                () = done => {}
                () = broken.notified() => {}
            }
        };
        self.session
            .run(handler, stop::stop_on(None, finished))
            .await
    }

    /// The end line of the trace.
    pub fn finish(&self, printer: &mut Printer) -> anyhow::Result<()> {
        trace::finish(&self.session, printer, self.t0)
    }
}

/// The experiment's port once it has bound, or the error that ended it before.
pub fn port<M>(
    port_rx: &mpsc::Receiver<u16>,
    result_rx: &mpsc::Receiver<anyhow::Result<M>>,
) -> anyhow::Result<u16> {
    match port_rx.recv() {
        Ok(port) => Ok(port),
        Err(_) => Err(result_rx
            .recv()?
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("experiment ended early"))),
    }
}

/// What the experiment measured, once the session has ended.
pub fn result<M>(result_rx: &mpsc::Receiver<anyhow::Result<M>>) -> anyhow::Result<M> {
    match result_rx.try_recv() {
        Ok(r) => r,
        Err(_) => anyhow::bail!("interrupted before the experiment finished"),
    }
}

/// One check of an experiment against the trace; the report's JSON has `name: pass`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub pass: bool,
    /// What was compared, for people.
    #[serde(skip)]
    pub what: &'static str,
    #[serde(skip)]
    pub left: u64,
    #[serde(skip)]
    pub right: u64,
}

/// A check that two numbers are equal.
pub fn check(name: &'static str, what: &'static str, left: u64, right: u64) -> Check {
    Check {
        name,
        what,
        left,
        right,
        pass: left == right,
    }
}

/// Serializes checks as `{"name": pass, …}`.
pub fn checks_as_map<S: serde::Serializer>(checks: &[Check], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(checks.iter().map(|c| (c.name, c.pass)))
}

/// The checks section of a text report.
pub fn write_checks(out: &mut dyn Write, checks: &[Check]) -> std::io::Result<()> {
    writeln!(out, "  checks")?;
    for c in checks {
        let verdict = if c.pass { "pass" } else { "FAIL" };
        writeln!(out, "    {verdict}  {} ({} vs {})", c.what, c.left, c.right)?;
    }
    Ok(())
}

/// Prints an experiment's report: one JSON object, or its text form.
pub fn print_report<R: Serialize>(
    report: &R,
    json: bool,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut stdout, report)?;
        writeln!(stdout)?;
    } else {
        text(&mut stdout)?;
    }
    stdout.flush()?;
    Ok(())
}
