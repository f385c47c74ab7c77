//! `sockbuf top`: a live per-socket view. The programs count in the kernel as `trace
//! --summary` does (`--full`: with every hook streaming uses); at each refresh the counts
//! are read (not taken out), differenced against the last refresh, and joined with the
//! socket table (`diag`) by inode.

mod batch;
mod cells;
mod diag;
mod owners;
mod recent;
mod rows;
mod screen;
mod sleeps;

use std::io::IsTerminal as _;

pub use diag::Diag;
pub use rows::Row;
use serde::Serialize;
use trace_common::user::Event;

use crate::{
    cli::TopArgs,
    format::monotonic_ns,
    session::{EventHandler, Session},
    summary::Summary,
    trace,
};

/// The columns rows can be sorted by, largest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    /// Bytes copied into send buffers per second.
    Send,
    /// Bytes read out of receive buffers per second.
    Recv,
    SendQ,
    Unsent,
    InFlight,
    RecvQ,
    /// `sk_sndbuf`.
    Sndbuf,
    /// How full the send buffer is.
    Use,
    /// Send calls per second.
    Calls,
    Eagain,
    /// Share of the interval asleep on a full send buffer (--full).
    Asleep,
    /// Write-to-ACK p50 (--full).
    Ack50,
    /// Write-to-ACK p99 (--full).
    Ack,
    Rst,
    Pid,
}

impl SortBy {
    fn key(self, r: &Row) -> f64 {
        let opt = |v: Option<u32>| v.map_or(-1.0, f64::from);
        let us = |v: Option<u64>| v.map_or(-1.0, |v| v as f64);
        match self {
            SortBy::Send => r.send_bytes_per_s,
            SortBy::Recv => r.recv_bytes_per_s,
            SortBy::SendQ => opt(r.send_q),
            SortBy::Unsent => opt(r.unsent),
            SortBy::InFlight => opt(r.in_flight),
            SortBy::RecvQ => opt(r.recv_q),
            SortBy::Sndbuf => opt(r.sndbuf),
            SortBy::Use => r.sndbuf_used_pct.unwrap_or(-1.0),
            SortBy::Calls => r.sends_per_s,
            SortBy::Eagain => r.eagain_per_s,
            SortBy::Asleep => r.asleep_pct.unwrap_or(-1.0),
            SortBy::Ack50 => us(r.ack_p50_us),
            SortBy::Ack => us(r.ack_p99_us),
            SortBy::Rst => r.rsts as f64,
            SortBy::Pid => f64::from(r.pid),
        }
    }

    /// The next sortable column on the screen (`back`: the previous one), for its keys.
    pub fn step(self, back: bool) -> Self {
        let order: Vec<SortBy> = cells::COLUMNS.iter().filter_map(|c| c.sort).collect();
        let i = order.iter().position(|&s| s == self).unwrap_or(0);
        let n = order.len();
        order[if back { (i + n - 1) % n } else { (i + 1) % n }]
    }

    /// Sorts `rows` largest first (`reverse`: smallest first); ties by socket id, so that
    /// rows do not swap places between refreshes for nothing.
    pub fn sort(self, rows: &mut [Row], reverse: bool) {
        rows.sort_by(|a, b| {
            let o = self.key(b).total_cmp(&self.key(a));
            let o = if reverse { o.reverse() } else { o };
            o.then(a.sock_id.cmp(&b.sock_id))
        });
    }
}

/// The session's events to the summary, and (with `--full`) the sleeps to `Sleeps`.
struct Watch {
    summary: Summary,
    sleeps: Option<sleeps::Sleeps>,
    /// The screen's detail view: each socket's last events.
    recent: Option<recent::Recent>,
}

impl EventHandler for Watch {
    fn on_event(&mut self, ev: &Event) {
        if let Some(s) = &mut self.sleeps {
            match ev {
                Event::BlockStart(e) => s.started(e),
                Event::Block(e) => s.ended(e),
                _ => {}
            }
        }
        if let Some(r) = &mut self.recent {
            r.on_event(ev);
        }
        self.summary.on_event(ev);
    }
}

/// The rates summed over every socket of a refresh.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub sockets: usize,
    pub send_bytes_per_s: f64,
    pub recv_bytes_per_s: f64,
    pub sends_per_s: f64,
    pub eagain_per_s: f64,
    pub rsts: u64,
}

impl Totals {
    fn of(rows: &[Row]) -> Self {
        let mut t = Totals {
            sockets: rows.len(),
            ..Totals::default()
        };
        for r in rows {
            t.send_bytes_per_s += r.send_bytes_per_s;
            t.recv_bytes_per_s += r.recv_bytes_per_s;
            t.sends_per_s += r.sends_per_s;
            t.eagain_per_s += r.eagain_per_s;
            t.rsts += r.rsts;
        }
        t
    }
}

/// One refresh: every socket's row (sorted), and sockbuf's own health.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub kind: &'static str,
    pub ts_ns: u64,
    pub interval_s: f64,
    pub sort: SortBy,
    pub totals: Totals,
    pub rows: Vec<Row>,
    pub lost: u64,
    pub faults: u64,
    pub missed: u64,
    /// The programs' backend (`tp_btf`, `fentry`, …).
    pub attach: &'static str,
    pub full: bool,
}

/// The session and what `top` keeps between refreshes.
pub struct Engine {
    session: Session,
    watch: Watch,
    rows: rows::Rows,
    last_ns: u64,
    full: bool,
    interval: tokio::time::Interval,
    table_rows: rows::TableRows,
}

impl Engine {
    fn start(args: &TopArgs, verbose: u8) -> anyhow::Result<Self> {
        let (session, summary) =
            trace::start_counting(&args.filter, &args.tracer, &args.bounds, args.full, verbose)?;
        let now = monotonic_ns();
        let mut interval =
            tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            session,
            watch: Watch {
                summary,
                sleeps: args.full.then(|| sleeps::Sleeps::new(now)),
                recent: None,
            },
            rows: rows::Rows::default(),
            last_ns: now,
            full: args.full,
            interval,
            table_rows: rows::TableRows {
                all: args.filter.pid.is_none()
                    && args.filter.comm.is_none()
                    && args.filter.cgroup.is_none(),
                port: args.filter.port,
            },
        })
    }

    /// Keeps each socket's last events from now on (the screen's detail view).
    fn keep_recent(&mut self) {
        self.watch.recent = Some(recent::Recent::new(monotonic_ns()));
    }

    /// Socket `id`'s last events, as `trace` prints them.
    fn recent(&self, id: u64) -> Vec<String> {
        self.watch
            .recent
            .as_ref()
            .map(|r| r.of(id).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Reads the ring buffer until the next refresh is due. Cancel-safe.
    async fn until_refresh(&mut self) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                r = self.session.step(&mut self.watch) => r?,
                _ = self.interval.tick() => return Ok(()),
            }
        }
    }

    /// The rows of the interval that ends now, sorted by `sort`.
    fn refresh(&mut self, sort: SortBy, reverse: bool) -> anyhow::Result<Snapshot> {
        self.session.drain_now(&mut self.watch);
        let now = monotonic_ns();
        let secs = (now.saturating_sub(self.last_ns) as f64 / 1e9).max(1e-3);
        self.last_ns = now;
        let peeked = self.watch.summary.peek()?;
        let table = socket_table();
        let asleep_ns = self.watch.sleeps.as_mut().map(|s| s.take(now));
        let mut rows = self.rows.update(rows::Refresh {
            peeked,
            table: &table,
            asleep_ns,
            sleepers: self.watch.sleeps.as_ref().map(|s| &s.who),
            table_rows: self.table_rows,
            secs,
        });
        sort.sort(&mut rows, reverse);
        if let Some(r) = &mut self.watch.recent {
            r.keep(&rows.iter().map(|r| r.sock_id).collect());
        }
        let k = self.session.counters()?;
        Ok(Snapshot {
            kind: "top",
            ts_ns: now,
            interval_s: secs,
            sort,
            totals: Totals::of(&rows),
            rows,
            lost: k.lost,
            faults: k.faults,
            missed: k.missed,
            attach: self.session.tracer().mode.name(),
            full: self.full,
        })
    }
}

/// The socket table now, by inode; empty where it cannot be read (the queue figures then
/// stay unknown, nothing else changes).
pub fn socket_table() -> std::collections::HashMap<u64, Diag> {
    diag::read_all()
        .inspect_err(|e| log::debug!("socket table: {e:#}"))
        .unwrap_or_default()
}

pub async fn run(args: TopArgs, verbose: u8) -> anyhow::Result<()> {
    let engine = Engine::start(&args, verbose)?;
    if args.batch || args.json || !std::io::stdout().is_terminal() {
        batch::run(engine, &args).await
    } else {
        screen::run(engine, &args).await
    }
}
