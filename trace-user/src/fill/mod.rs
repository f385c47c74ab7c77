//! `sockbuf fill`: the send-buffer fill experiment, run for real, traced while it runs.

mod experiment;
mod handler;
pub mod plot;
mod report;
mod then;

use std::{
    sync::{Arc, mpsc},
    thread,
};

use anyhow::Context as _;
use tokio::sync::Notify;

pub use self::then::Then;

/// How long, after the server read the client's FIN, to wait for the trace to show its ACK.
const FIN_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
use self::{
    experiment::{Plan, WriterState},
    handler::FillHandler,
    report::FillReport,
};
use crate::{
    cli::{FillArgs, FillMode},
    error::SetupError,
    lab::{self, Lab},
    netns::NetNs,
    preflight, stop,
};

/// Runs the experiment; `Ok(false)` when a check failed.
pub async fn run(args: FillArgs, verbose: u8) -> anyhow::Result<bool> {
    if args.then.is_some() && args.mode != FillMode::Nonblocking {
        return Err(
            SetupError::BadArgs("--then needs --mode nonblocking: drop --mode blocking").into(),
        );
    }
    preflight::check_privileges()?;
    args.stacks.check_paths()?;
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
    let released = Arc::new(Notify::new());
    let writer = Arc::new(WriterState::default());
    // Not joined: a Ctrl-C during --hold ends the process, and the thread and its sockets
    // with it.
    let _experiment = {
        let (ns, done, writer, plan) = (ns.clone(), done.clone(), writer.clone(), plan.clone());
        let released = released.clone();
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
                    "sockbuf: holding the sockets for {}: nsenter --net={} ss -tmi",
                    humantime::format_duration(hold),
                    ns.path
                );
                thread::sleep(hold);
                drop(held);
            }
            released.notify_one();
        })?
    };
    let port = lab::port(&port_rx, &result_rx)?;

    // Only this process's sockets on the experiment's port: the client and its peer.
    let (mut lab, printer) =
        Lab::start(port, &args.tracer, Some(&args.stacks), verbose, args.json)?;
    let mut handler = FillHandler::new(printer, asleep_tx, writer, args.json);
    go_tx
        .send(())
        .context("the experiment stopped before connecting")?;

    let broken = handler.printer.broken.clone();
    let fin_acked = handler.fin_acked.clone();
    let ended = async {
        done.notified().await;
        if args.then == Some(Then::CloseUnsent) {
            // The experiment ends when the server reads the FIN; the client's kernel takes the
            // server's ACK of it a moment later (in softirq, on either CPU): keep tracing until
            // the trace shows it, so the report can check where it came.
            let _ = tokio::time::timeout(FIN_ACK_WAIT, fin_acked.notified()).await;
        }
    };
    lab.run(&mut handler, ended, &broken).await?;
    let measured = lab::result(&result_rx)?;
    lab.finish(&mut handler.printer)?;
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
        ns.path.clone(),
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
    // The experiment's writer is sockbuf's own code (`trace_user`, the library's crate).
    report.slept_in = printer
        .stacks
        .as_ref()
        .and_then(|s| s.slept_in(Some("trace_user::")));
    crate::trace::write_stacks(&args.stacks, printer.stacks.as_ref())?;
    if let Some(path) = &args.plot {
        plot::write_svg(path, &measured, &traced)?;
        log::info!("wrote {}", path.display());
    }
    printer.out.flush()?;
    lab::print_report(&report, args.json, |out| report.write_text(out))?;
    // The experiment may still hold its sockets open (--hold): until it lets them go, or
    // Ctrl-C or SIGTERM (tokio's handler has replaced the default that would end the process).
    stop::stop_on(None, released.notified()).await;
    Ok(report.passed())
}
