//! `sockbuf udp`: UDP's send and receive buffers and MSG_MORE corking, run for real and
//! traced while it runs.

mod experiment;
mod report;

use std::{
    sync::{Arc, mpsc},
    thread,
};

use anyhow::Context as _;
use tokio::sync::Notify;

use self::{
    experiment::Plan,
    report::{UdpHandler, UdpReport},
};
use crate::{
    cli::UdpArgs,
    error::SetupError,
    lab::{self, Lab},
    netns::NetNs,
    preflight,
};

/// The largest UDP payload over IPv4: what one corked datagram can hold.
const MAX_DATAGRAM: u64 = 65_507;

/// Runs the experiment; `Ok(false)` when a check failed.
pub async fn run(args: UdpArgs, verbose: u8) -> anyhow::Result<bool> {
    if args.msg_more && u64::from(args.count) * u64::from(args.size) > MAX_DATAGRAM {
        return Err(SetupError::BadArgs(
            "--msg-more makes one datagram of count × size bytes: keep it at most 65507",
        )
        .into());
    }
    preflight::check_privileges()?;
    let ns = Arc::new(NetNs::create()?);
    let plan = Plan {
        count: args.count,
        size: args.size,
        msg_more: args.msg_more,
    };
    let (port_tx, port_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    let done = Arc::new(Notify::new());
    {
        let (ns, done) = (ns.clone(), done.clone());
        thread::Builder::new().name("udp".into()).spawn(move || {
            let _ = result_tx.send(experiment::run(plan, &ns, port_tx, go_rx));
            done.notify_one();
        })?;
    }
    let port = lab::port(&port_rx, &result_rx)?;
    let (mut lab, printer) = Lab::start(port, &args.tracer, None, verbose, args.json)?;
    let mut handler = UdpHandler {
        printer,
        udp: Vec::new(),
        recvs: Vec::new(),
    };
    go_tx
        .send(())
        .context("the experiment stopped before sending")?;
    let broken = handler.printer.broken.clone();
    lab.run(&mut handler, done.notified(), &broken).await?;
    let measured = lab::result(&result_rx)?;
    lab.finish(&mut handler.printer)?;
    let report = UdpReport::new(plan, &measured, &handler, ns.path.clone());
    handler.printer.out.flush()?;
    lab::print_report(&report, args.json, |out| report.write_text(out))?;
    Ok(report.passed())
}
