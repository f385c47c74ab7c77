//! `sockbuf trace`: stream send, block and ACK events until stopped.

use std::{io::Write, rc::Rc};

use anyhow::Context as _;
use tokio::sync::Notify;
use trace_common::{agg::Level, user::Event};

use crate::{
    acks::AckMatcher,
    cli::TraceArgs,
    filter,
    format::monotonic_ns,
    loader::LoadOptions,
    output::{self, Output, Totals},
    replay::Recorder,
    session::{EventHandler, Session},
    stacks::StackSink,
    stop,
    summary::Summary,
};

/// Sends every event to an [`Output`] and pairs writes with ACKs.
pub struct Printer {
    pub out: Box<dyn Output>,
    pub acks: AckMatcher,
    pub totals: Totals,
    /// `--stacks`: names the events' stacks and sums them.
    pub stacks: Option<StackSink>,
    /// Woken when output fails (e.g. a closed pipe), so the session stops.
    pub broken: Rc<Notify>,
    failed: bool,
}

impl Printer {
    pub fn new(out: Box<dyn Output>) -> Self {
        Self {
            out,
            acks: AckMatcher::default(),
            totals: Totals::default(),
            stacks: None,
            broken: Rc::default(),
            failed: false,
        }
    }

    fn check(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r
            && !self.failed
        {
            self.failed = true;
            log::debug!("output failed: {e}");
            self.broken.notify_one();
        }
    }
}

impl EventHandler for Printer {
    fn on_event(&mut self, ev: &Event) {
        if self.failed {
            return;
        }
        let Self {
            out,
            acks,
            totals,
            stacks,
            ..
        } = self;
        let mut res = Ok(());
        totals.records_by_kind.count(ev);
        match ev {
            Event::Send(e) => {
                totals.sends += 1;
                let stack = stacks.as_mut().and_then(|s| s.on_send(e));
                res = out.send(e, stack.as_deref());
                acks.on_send(e, |w| {
                    totals.acks += 1;
                    if res.is_ok() {
                        res = out.ack(w);
                    }
                });
            }
            Event::Block(e) => {
                totals.blocks += 1;
                let stack = stacks.as_mut().and_then(|s| s.on_block(e));
                res = out.block(e, stack.as_deref());
            }
            Event::BlockStart(e) => {
                let stack = stacks.as_mut().and_then(|s| s.on_block(e));
                res = out.block(e, stack.as_deref());
            }
            Event::Recv(e) => res = out.recv(e),
            Event::Sock(e) => {
                res = out.sock(e);
                acks.on_sock(e, |w| {
                    totals.acks += 1;
                    if res.is_ok() {
                        res = out.ack(w);
                    }
                });
            }
            Event::Udp(e) => res = out.udp(e),
            Event::Call(e) => res = out.call(e),
            Event::StackTop(e) => {
                if let Some(s) = stacks {
                    s.on_top(e);
                }
            }
            Event::Ack(e) => {
                log::trace!(
                    "ack sock {} {}..{} at {}",
                    e.hdr.sock_id,
                    e.prev_acked,
                    e.acked,
                    e.hdr.ts_ns
                );
                acks.on_ack(e, |w| {
                    totals.acks += 1;
                    if res.is_ok() {
                        res = out.ack(w);
                    }
                });
            }
        }
        let res = res.and_then(|()| out.event_done());
        self.check(res);
    }

    fn on_batch_end(&mut self) {
        let r = self.out.flush();
        self.check(r);
    }
}

/// Builds the load options shared by the commands that trace.
pub fn load_options(
    filter: &crate::cli::FilterArgs,
    tracer: &crate::cli::TracerArgs,
    verbose: u8,
    aggregate: Level,
    max_sockets: u32,
) -> anyhow::Result<LoadOptions> {
    Ok(LoadOptions {
        filter: filter::build(filter)?,
        attach: tracer.attach,
        ring_bytes: tracer.ring_size,
        kernel_log: verbose > 0,
        aggregate,
        max_sockets,
        stacks: trace_common::stacks::OFF,
        max_stacks: 1,
    })
}

/// Loads the programs counting in the kernel as `--summary` does (`full`: `--full`), and
/// the summary that reads the counts: what `top` and `export` run on. Closed sockets' last
/// rows are kept for [`Summary::peek`].
pub fn start_counting(
    filter: &crate::cli::FilterArgs,
    tracer: &crate::cli::TracerArgs,
    bounds: &crate::cli::BoundArgs,
    full: bool,
    verbose: u8,
) -> anyhow::Result<(Session, Summary)> {
    let level = if full { Level::Full } else { Level::Counts };
    let opts = load_options(filter, tracer, verbose, level, bounds.max_sockets())?;
    let mut session = Session::start(&opts)?;
    let counts = session.tracer_mut().take_counts(full)?;
    let mut summary = Summary::new(full, bounds.summary(), Some(counts));
    summary.keep_closed();
    Ok((session, summary))
}

pub async fn run(args: TraceArgs, verbose: u8) -> anyhow::Result<()> {
    let level = match (args.summary, args.full) {
        (false, _) => Level::Off,
        (true, false) => Level::Counts,
        (true, true) => Level::Full,
    };
    let mut opts = load_options(
        &args.filter,
        &args.tracer,
        verbose,
        level,
        args.bounds.max_sockets(),
    )?;
    args.stacks.check_paths()?;
    opts.stacks = args.stacks.mode();
    opts.max_stacks = args.stacks.max_stacks;
    let mut session = Session::start(&opts)?;
    if let Some(path) = &args.record {
        session.recorder = Some(Recorder::create(path)?);
    }
    let t0 = monotonic_ns();
    let stdout: Box<dyn Write> = Box::new(std::io::BufWriter::with_capacity(
        1 << 16,
        std::io::stdout(),
    ));
    let mut printer = Printer::new(output::new_output(args.json, stdout, t0, !args.summary));
    printer.acks = AckMatcher::new(args.bounds.max_sockets() as usize);
    if opts.stacks != trace_common::stacks::OFF {
        let mut names = session.tracer_mut().take_stacks()?;
        names.warm_up(None);
        printer.stacks = Some(StackSink::new(names, opts.stacks));
    }
    let tracer = session.tracer();
    printer.out.start(tracer.mode.name(), &tracer.refused)?;
    printer.out.flush()?;
    let broken = printer.broken.clone();
    let stop = stop::stop_on(args.duration, broken.notified());
    if !args.summary {
        session.run(&mut printer, stop).await?;
        if let Some(r) = session.recorder.take() {
            r.finish().context("--record")?;
        }
        finish(&session, &mut printer, t0)?;
        return write_stacks(&args.stacks, printer.stacks.as_ref());
    }
    let counts = session.tracer_mut().take_counts(args.full)?;
    let mut summary = Summary::new(args.full, args.bounds.summary(), Some(counts));
    session.run(&mut summary, stop).await?;
    summary.finish(session.counters()?.agg_streamed)?;
    report_overflow(&summary.overflow);
    let mut out = std::io::stdout().lock();
    summary.write(&mut out, args.json)?;
    out.flush()?;
    drop(out);
    printer.totals = summary.totals;
    printer.acks = std::mem::take(&mut summary.acks);
    finish(&session, &mut printer, t0)
}

/// `--folded` and `--flamegraph` files, once the session is over.
pub fn write_stacks(args: &crate::cli::StackArgs, sink: Option<&StackSink>) -> anyhow::Result<()> {
    let Some(sink) = sink else {
        return Ok(());
    };
    if let Some(path) = &args.folded {
        sink.folded.write(path).context("--folded")?;
    }
    if let Some(path) = &args.flamegraph {
        sink.folded.flamegraph(path).context("--flamegraph")?;
    }
    Ok(())
}

/// Says on stderr which bound was hit and what it did; nothing is silently dropped.
fn report_overflow(o: &crate::summary::Overflow) {
    if o.events_past_max_sockets > 0 {
        log::warn!(
            "{} events of {} sockets met while --max-sockets sockets were live were counted in their groups, not rows of their own (raise --max-sockets)",
            o.events_past_max_sockets,
            o.sockets_past_max_sockets
        );
    }
    if o.sockets_past_max_groups > 0 {
        log::warn!(
            "{} closed sockets went to the (other) group: --max-groups groups existed",
            o.sockets_past_max_groups
        );
    }
    if o.calls_streamed_by_kernel > 0 {
        log::info!(
            "{} calls were streamed as events, not counted in the kernel, because its table had no entry for their socket (all are counted)",
            o.calls_streamed_by_kernel
        );
    }
    if o.closes_inferred > 0 {
        log::warn!(
            "{} sockets ended without their CLOSE being seen; each was closed when a new socket took its memory",
            o.closes_inferred
        );
    }
}

/// Prints the totals line, with the kernel's lost and fault counts.
pub fn finish(session: &Session, printer: &mut Printer, t0: u64) -> anyhow::Result<()> {
    let k = session.counters()?;
    let t = &mut printer.totals;
    t.records = session.stats.records;
    t.lost = k.lost;
    t.stacks_lost = k.stacks_lost;
    if t.stacks_lost > 0 {
        log::warn!(
            "{} stacks were not taken: the stack map had no room for them (raise --max-stacks) or the walk failed",
            t.stacks_lost
        );
    }
    t.faults = k.faults;
    t.missed = k.missed;
    if t.missed > 0 {
        log::warn!(
            "the kernel skipped {} runs of sockbuf's programs (a program already running on that CPU, preempted or interrupted, is not entered again): those events are missing",
            t.missed
        );
    }
    t.unacked += printer.acks.unacked() as u64;
    t.duration_ns = monotonic_ns() - t0;
    if t.lost > 0 {
        log::warn!(
            "{} events lost: the ring buffer was full (try a larger --ring-size, or give sockbuf CPU beside a busy workload: nice -n -10 sockbuf ...)",
            t.lost
        );
    }
    let totals = *t;
    if !printer.failed {
        printer.out.end(&totals)?;
        printer.out.flush()?;
    }
    Ok(())
}
