//! A tracing session: the loaded programs, and the ring buffer read through tokio's `AsyncFd`,
//! drained in batches, until a stop future resolves.

use std::{future::Future, os::fd::AsRawFd};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use aya_log::EbpfLogger;
use tokio::io::{
    Interest,
    unix::{AsyncFd, AsyncFdReadyMutGuard},
};
use trace_common::user::Event;

use crate::{
    loader::{DRAIN_INTERVAL, KernelCounters, LoadOptions, Tracer},
    replay::Recorder,
};

/// Receives decoded events, a batch at a time.
pub trait EventHandler {
    fn on_event(&mut self, ev: &Event);
    /// Called after each drained batch: the place to flush output.
    fn on_batch_end(&mut self) {}
}

/// What a session saw in the ring buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionStats {
    /// Records read from the ring buffer.
    pub records: u64,
    /// Records that did not decode (a build mismatch; should stay 0).
    pub undecodable: u64,
}

pub struct Session {
    tracer: Tracer,
    ring: AsyncFd<RingBuf<MapData>>,
    logger: Option<AsyncFd<Logger>>,
    /// Below the wake-up threshold the kernel does not wake us; this bounds how long an
    /// event can wait at low rates.
    drain_timer: tokio::time::Interval,
    pub stats: SessionStats,
    /// `trace --record`: where every record goes too.
    pub recorder: Option<Recorder>,
}

impl Session {
    /// Loads and attaches the programs. Must run inside a tokio runtime.
    pub fn start(opts: &LoadOptions) -> anyhow::Result<Self> {
        let mut tracer = Tracer::load(opts)?;
        let ring = readable(tracer.take_events()?).context("polling the ring buffer")?;
        let logger = match tracer.take_logger() {
            Some(l) => Some(readable(l).context("polling the eBPF log")?),
            None => None,
        };
        let mut drain_timer = tokio::time::interval(DRAIN_INTERVAL);
        drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            tracer,
            ring,
            logger,
            drain_timer,
            stats: SessionStats::default(),
            recorder: None,
        })
    }

    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    pub fn tracer_mut(&mut self) -> &mut Tracer {
        &mut self.tracer
    }

    pub fn counters(&self) -> anyhow::Result<KernelCounters> {
        self.tracer.counters()
    }

    /// Streams events to `handler` until `stop` resolves, then drains what is left.
    pub async fn run<H: EventHandler>(
        &mut self,
        handler: &mut H,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                r = self.step(handler) => r?,
                () = &mut stop => break,
            }
        }
        self.drain_now(handler);
        Ok(())
    }

    /// Waits for the ring buffer (or the drain timer, or the eBPF log) once and hands what
    /// it holds to `handler`. Cancel-safe, for callers that wait on more than the session
    /// (`top`'s refresh and keys).
    pub async fn step<H: EventHandler>(&mut self, handler: &mut H) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.drain_timer.tick() => drain(self.ring.get_mut(), &mut self.stats, &mut self.recorder, handler),
            guard = self.ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                // Cleared before draining, so a wake-up during the drain is not lost.
                guard.clear_ready();
                drain(guard.get_inner_mut(), &mut self.stats, &mut self.recorder, handler);
            }
            guard = readable_log(&mut self.logger) => {
                let mut guard = guard.context("waiting on the eBPF log")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
        Ok(())
    }

    /// Reads whatever the ring buffer holds right now.
    pub fn drain_now<H: EventHandler>(&mut self, handler: &mut H) {
        drain(
            self.ring.get_mut(),
            &mut self.stats,
            &mut self.recorder,
            handler,
        );
        if let Some(l) = &mut self.logger {
            l.get_mut().flush();
        }
    }
}

/// Registers a map's fd with tokio for readability.
fn readable<T: AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its map fd (aya's RingBuf / EbpfLogger) and keeps it open, returning the
    // same fd, until it is dropped together with the AsyncFd.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

type Logger = EbpfLogger<&'static dyn log::Log>;

async fn readable_log(
    logger: &mut Option<AsyncFd<Logger>>,
) -> std::io::Result<AsyncFdReadyMutGuard<'_, Logger>> {
    match logger {
        Some(l) => l.readable_mut().await,
        None => std::future::pending().await,
    }
}

fn drain<H: EventHandler>(
    ring: &mut RingBuf<MapData>,
    stats: &mut SessionStats,
    recorder: &mut Option<Recorder>,
    handler: &mut H,
) {
    let mut any = false;
    while let Some(item) = ring.next() {
        stats.records += 1;
        any = true;
        if let Some(r) = recorder
            && let Err(e) = r.record(&item)
        {
            log::warn!("--record: {e}; recording stops");
            *recorder = None;
        }
        match Event::parse(&item) {
            Ok(ev) => handler.on_event(&ev),
            Err(e) => {
                stats.undecodable += 1;
                log::warn!("undecodable ring buffer record: {e}");
            }
        }
    }
    if any {
        handler.on_batch_end();
    }
}
