//! `sockbuf fill`: the send-buffer fill experiment, run for real, traced while it runs.

mod experiment;
mod handler;
mod netns;
pub mod plot;
mod report;
mod sock;
mod then;

use std::{
    io::Write,
    sync::{Arc, mpsc},
    thread,
};

use anyhow::Context as _;
use tokio::sync::Notify;
use trace_common::Filter;

use self::{
    experiment::{Plan, WriterState},
    handler::FillHandler,
    netns::NetNs,
    report::FillReport,
};
pub use self::then::Then;
use crate::{
    cli::{FillArgs, FillMode},
    error::SetupError,
    format::monotonic_ns,
    loader::LoadOptions,
    output, preflight,
    session::Session,
    stop,
    trace::{self, Printer},
};

/// Runs the experiment; `Ok(false)` when a check failed.
pub async fn run(args: FillArgs, verbose: u8) -> anyhow::Result<bool> {
    if args.then.is_some() && args.mode != FillMode::Nonblocking {
        return Err(SetupError::BadArgs(
            "--then needs --mode nonblocking: drop --mode blocking",
        )
        .into());
    }
    preflight::check_privileges()?;
    let ns = Arc::new(NetNs::create()?);
    let plan = Plan {
        mode: args.mode,
        chunk: args.chunk as usize,
        interval: args.interval,
        sndbuf: args.sndbuf,
        rcvbuf: args.rcvbuf,
        ipv6: args.ipv6,
        tcp_wmem: args.tcp_wmem,
        tcp_rmem: args.tcp_rmem,
        read_after: args.read_after,
        hold: args.hold,
        then: args.then,
    };

    let (port_tx, port_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let (asleep_tx, asleep_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    let done = Arc::new(Notify::new());
    let writer = Arc::new(WriterState::default());
    let experiment = {
        let (ns, done, writer, plan) = (ns.clone(), done.clone(), writer.clone(), plan.clone());
        thread::Builder::new().name("fill".into()).spawn(move || {
            let (r, held) =
                match experiment::run(plan.clone(), &ns, port_tx, go_rx, asleep_rx, writer) {
                    Ok((m, held)) => (Ok(m), Some(held)),
                    Err(e) => (Err(e), None),
                };
            let _ = result_tx.send(r);
            done.notify_one();
            if let (Some(hold), Some(held)) = (plan.hold, held) {
                eprintln!(
                    "sockbuf: holding the sockets for {}: ip netns exec {} ss -tmi",
                    humantime::format_duration(hold),
                    ns.name
                );
                thread::sleep(hold);
                drop(held);
            }
        })?
    };
    let Ok(port) = port_rx.recv() else {
        return Err(result_rx
            .recv()?
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("experiment ended early")));
    };

    // Only this process's sockets on the experiment's port: the client and its peer.
    let filter = Filter {
        pid: std::process::id(),
        port,
        ..Filter::default()
    };
    let opts = LoadOptions {
        filter,
        attach: args.tracer.attach,
        ring_bytes: args.tracer.ring_size,
        kernel_log: verbose > 0,
    };
    let mut session = Session::start(&opts)?;
    let t0 = monotonic_ns();
    let stdout: Box<dyn Write> = Box::new(std::io::BufWriter::with_capacity(
        1 << 16,
        std::io::stdout(),
    ));
    let mut printer = Printer::new(output::new_output(args.json, stdout, t0, true));
    printer
        .out
        .start(session.tracer().mode.name(), &session.tracer().refused)?;
    let mut handler = FillHandler::new(printer, asleep_tx, writer, args.json);
    go_tx
        .send(())
        .context("the experiment stopped before connecting")?;

    let broken = handler.printer.broken.clone();
    let finished = async {
        tokio::select! {
            () = done.notified() => {}
            () = broken.notified() => {}
        }
    };
    session
        .run(&mut handler, stop::stop_on(None, finished))
        .await?;
    let measured = match result_rx.try_recv() {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("interrupted before the experiment finished"),
    };
    trace::finish(&session, &mut handler.printer, t0)?;
    let FillHandler {
        mut printer,
        traced,
        ..
    } = handler;

    let mut report = FillReport::new(
        &measured,
        &traced,
        args.mode,
        u64::from(args.chunk),
        args.interval.as_nanos() as u64,
        args.ipv6,
        ns.name.clone(),
    );
    if let (Some(then), Some(m)) = (args.then, &measured.then) {
        report.add_then(then::ThenReport::new(
            then,
            m,
            &traced,
            measured.client_ino,
            measured.server_ino,
            measured.accepted_bytes,
        ));
    }
    if let Some(path) = &args.plot {
        plot::write_svg(path, &measured, &traced)?;
        log::info!("wrote {}", path.display());
    }
    printer.out.flush()?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        report.write_text(&mut stdout)?;
    }
    stdout.flush()?;
    drop(stdout);
    // The experiment may still hold its sockets open (--hold).
    let _ = tokio::task::spawn_blocking(move || experiment.join()).await;
    Ok(report.passed())
}
