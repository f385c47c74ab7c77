//! `sockbuf trace --summary`: per-socket totals and log2 histograms at the end, instead of
//! one line per event. Built to be left running: a socket's counts are taken out of the
//! kernel when it closes; live sockets keep their rows, the `--top` largest closed ones too,
//! and every other closed socket is folded into a group, so memory stays flat under
//! connection churn and the totals keep everything.

mod closed;
mod counts;
mod kernel;
mod sk_kept;
mod write;

use std::collections::HashMap;

pub use closed::{Closed, Group, GroupKey};
pub use counts::{Counts, Side, SockSummary, TopBy};
pub use kernel::{KernelCounts, Taken};
pub use sk_kept::SkCounts;
use trace_common::{
    EventKind, Header, SEND_F_UNSEEN, SockAddrs,
    agg::{Pending, SockAgg},
    calls, tcp_state,
    user::Event,
};

use crate::{
    acks::{AckMatcher, AckedWrite},
    format,
    output::Totals,
    session::EventHandler,
};

/// The summary's bounds (flags of `sockbuf trace`).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Sockets counted one by one at once (live rows; the kernel's AGG entries).
    pub max_sockets: usize,
    /// Closed sockets kept as rows.
    pub top: usize,
    pub top_by: TopBy,
    /// Groups of closed sockets.
    pub max_groups: usize,
}

/// What hitting a bound did, by name (reported in the summary and on stderr).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Overflow {
    /// Events of sockets met while `--max-sockets` were live: counted in their group.
    pub events_past_max_sockets: u64,
    /// Of those sockets, how many closed.
    pub sockets_past_max_sockets: u64,
    /// Closed sockets folded into the `(other)` group: `--max-groups` groups existed.
    pub sockets_past_max_groups: u64,
    /// Calls the kernel streamed as events because AGG had no entry for their socket
    /// (full, or no memory at that instant); still counted here.
    pub calls_streamed_by_kernel: u64,
    /// Sockets whose CLOSE sockbuf never saw (a run the kernel skipped, or UDP, which has
    /// none), closed when a new socket took their memory (`UNKNOWN → CLOSE`).
    pub closes_inferred: u64,
}

pub struct Summary {
    /// `--full`: every hook was attached, every field measured.
    pub full: bool,
    live: HashMap<u64, SockSummary>,
    closed: Closed,
    kernel: Option<KernelCounts>,
    bounds: Bounds,
    pub overflow: Overflow,
    pub acks: AckMatcher,
    pub totals: Totals,
    /// `top`: rows of sockets closed since the last [`Summary::peek`] (`None`: not kept).
    recent: Option<Vec<SockSummary>>,
    /// Sockets whose counts the kernel kept in the socket itself (`SkCounts`), at least
    /// in part: what says that cheaper path was taken.
    pub kept_sockets: u64,
}

impl Summary {
    pub fn new(full: bool, bounds: Bounds, kernel: Option<KernelCounts>) -> Self {
        Self {
            full,
            live: HashMap::new(),
            closed: Closed::new(bounds.top, bounds.top_by, bounds.max_groups),
            kernel,
            bounds,
            overflow: Overflow::default(),
            acks: AckMatcher::default(),
            totals: Totals::default(),
            recent: None,
            kept_sockets: 0,
        }
    }

    /// `top`: keeps each socket's last row when it closes, until the next [`Summary::peek`].
    pub fn keep_closed(&mut self) {
        self.recent = Some(Vec::new());
    }

    /// `top`: every live socket's counts so far, the kernel's included (read, not taken
    /// out), and the rows of sockets closed since the last peek.
    pub fn peek(&mut self) -> anyhow::Result<Vec<SockSummary>> {
        let mut rows: HashMap<u64, SockSummary> = self.live.clone();
        if let Some(k) = &self.kernel {
            for (id, per_cpu) in k.counted()? {
                let s = rows.entry(id).or_insert_with(|| SockSummary {
                    sock_id: id,
                    ..SockSummary::default()
                });
                for a in &per_cpu {
                    if a.addrs.family != 0 {
                        s.learn(a.ino, a.pid, &a.comm, &a.addrs, a.pid != 0);
                    }
                    s.counts.add_counted(a);
                }
            }
        }
        let mut rows: Vec<SockSummary> = rows.into_values().collect();
        rows.extend(self.recent.iter_mut().flat_map(std::mem::take));
        Ok(rows)
    }

    /// Live rows now (for tests of the bounds, and `-v`).
    pub fn live_sockets(&self) -> usize {
        self.live.len()
    }

    /// The counts an event of socket `hdr.sock_id` goes to: its row (made if new), a
    /// recently closed socket's place, or, past `--max-sockets`, its group.
    /// `by_call`: the event is a call's, made by the task it names.
    fn counts(
        &mut self,
        hdr: &Header,
        comm: &[u8; 16],
        a: &SockAddrs,
        by_call: bool,
    ) -> &mut Counts {
        let id = hdr.sock_id;
        if !self.live.contains_key(&id) {
            if self.closed.late(id).is_some() {
                return self.closed.late(id).expect("checked");
            }
            if self.live.len() >= self.bounds.max_sockets {
                self.overflow.events_past_max_sockets += 1;
                return self
                    .closed
                    .untracked(&SockSummary::new(hdr, comm, a, by_call));
            }
        }
        let s = self
            .live
            .entry(id)
            .or_insert_with(|| SockSummary::new(hdr, comm, a, by_call));
        s.learn(hdr.ino, hdr.pid, comm, a, by_call);
        &mut s.counts
    }

    /// Counts of a socket that an event without addresses names, if it has any.
    fn known(&mut self, id: u64) -> Option<&mut Counts> {
        match self.live.get_mut(&id) {
            Some(s) => Some(&mut s.counts),
            None => self.closed.late(id),
        }
    }

    fn acked(&mut self, w: &AckedWrite) {
        self.totals.acks += 1;
        if let Some(c) = self.known(w.sock_id) {
            c.acked(w.acked_ns());
        }
    }

    /// Socket `id` reached CLOSE: its kernel counts are taken out and added, and its row
    /// goes to the closed sockets (a row of its own if among the `--top` largest).
    fn close(&mut self, id: u64, hdr: &Header, comm: &[u8; 16], a: &SockAddrs) {
        if !self.live.contains_key(&id) && self.closed.late(id).is_some() {
            // Closed before (a socket connected again after a failed connect).
            if let Some(k) = &mut self.kernel {
                let taken = k.take(id);
                self.kept_sockets += u64::from(taken.kept());
                let mut s = SockSummary::default();
                self.totals.unacked += add_taken(&mut s, &taken, &mut self.totals);
                self.closed.late(id).expect("checked").merge(&s.counts);
            }
            return;
        }
        let (mut s, tracked) = match self.live.remove(&id) {
            Some(s) => (s, true),
            None => (SockSummary::new(hdr, comm, a, false), false),
        };
        if let Some(k) = &mut self.kernel {
            let taken = k.take(id);
            self.kept_sockets += u64::from(taken.kept());
            self.totals.unacked += add_taken(&mut s, &taken, &mut self.totals);
        }
        s.closed = true;
        if let Some(r) = &mut self.recent {
            r.push(s.clone());
        }
        if tracked {
            self.closed.add(s);
        } else {
            self.overflow.sockets_past_max_sockets += 1;
            self.closed.add_untracked(&s);
        }
    }

    /// At the end: what the kernel still counts (live sockets) is added to their rows.
    pub fn finish(&mut self, calls_streamed_by_kernel: u64) -> anyhow::Result<()> {
        self.overflow.calls_streamed_by_kernel = calls_streamed_by_kernel;
        let Some(k) = self.kernel.take() else {
            return Ok(());
        };
        for (id, taken) in k.all()? {
            self.kept_sockets += u64::from(taken.kept());
            if let Some(s) = self.live.get_mut(&id) {
                self.totals.unacked += add_taken(s, &taken, &mut self.totals);
                continue;
            }
            let mut s = SockSummary {
                sock_id: id,
                ..SockSummary::default()
            };
            let unacked = add_taken(&mut s, &taken, &mut self.totals);
            self.totals.unacked += unacked;
            if let Some(c) = self.closed.late(id) {
                c.merge(&s.counts);
            } else if self.live.len() < self.bounds.max_sockets {
                self.live.insert(id, s);
            } else {
                self.overflow.sockets_past_max_sockets += 1;
                self.closed.untracked(&s).merge(&s.counts);
            }
        }
        Ok(())
    }

    /// Every count: live rows, kept closed rows and groups.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for s in self.live.values().chain(self.closed.top()) {
            t.merge(&s.counts);
        }
        for g in self.closed.groups() {
            t.merge(&g.counts);
        }
        t
    }
}

/// Adds a socket's kernel counts to its row (identity from the entries that have one);
/// returns its writes left unacked.
fn add_taken(s: &mut SockSummary, t: &Taken, totals: &mut Totals) -> u64 {
    for a in &t.per_cpu {
        if a.addrs.family != 0 {
            s.learn(a.ino, a.pid, &a.comm, &a.addrs, a.pid != 0);
        }
        add_counted(s, a, totals);
    }
    t.waiting.as_ref().map_or(0, |p| add_waiting(s, p, totals))
}

/// Adds one CPU's in-kernel counts.
fn add_counted(s: &mut SockSummary, a: &SockAgg, totals: &mut Totals) {
    s.counts.add_counted(a);
    totals.sends += a.sends();
    totals.acks += a.acked_writes + a.call_acked_writes + a.close_acked_writes;
    totals.unacked += a.unacked_writes;
}

/// A socket's writes the kernel still had waiting: those the last ACK covers came before
/// they were queued (no later ACK took them off); the rest are unacked, returned as a count.
fn add_waiting(s: &mut SockSummary, p: &Pending, totals: &mut Totals) -> u64 {
    let mut unacked = 0;
    for (end, start_ns) in p.waiting() {
        if p.covered(end) {
            s.counts.acked(p.last_ack_ns.saturating_sub(start_ns));
            totals.acks += 1;
        } else {
            unacked += 1;
        }
    }
    unacked
}

impl EventHandler for Summary {
    fn on_event(&mut self, ev: &Event) {
        self.totals.records_by_kind.count(ev);
        match ev {
            Event::Send(e) => {
                self.totals.sends += 1;
                let c = self.counts(&e.hdr, &e.comm, &e.addrs, true);
                c.sends += 1;
                c.requested_bytes += e.requested;
                c.result(e.ret, e.flags & SEND_F_UNSEEN != 0);
                if e.call.piece == 0 && calls::pieced(e.call.syscall) {
                    c.pieced_calls += 1;
                }
                let mut acked = Vec::new();
                self.acks.on_send(e, |w| acked.push(*w));
                for w in &acked {
                    self.acked(w);
                }
            }
            // Only streamed when the summary is off: its pieces were counted.
            Event::BlockStart(_) | Event::Call(_) | Event::StackTop(_) => {}
            Event::Recv(e) => self
                .counts(&e.hdr, &e.comm, &e.addrs, true)
                .recv_result(e.ret),
            Event::Sock(e) => {
                let mut acked = Vec::new();
                self.acks.on_sock(e, |w| acked.push(*w));
                for w in &acked {
                    self.acked(w);
                }
                let kind = EventKind::from_u32(e.hdr.kind);
                let c = self.counts(&e.hdr, &e.comm, &e.addrs, false);
                match kind {
                    Some(EventKind::State) => c.dropped_unread_bytes += format::dropped_at_close(e),
                    Some(EventKind::RstOut) => c.rst_sent += 1,
                    Some(EventKind::RstIn) => c.rst_received += 1,
                    Some(EventKind::FinOut) => c.fin_sent += 1,
                    _ => c.fin_received += 1,
                }
                if kind != Some(EventKind::State) {
                    return;
                }
                let id = e.hdr.sock_id;
                if let Some(s) = self.live.get_mut(&id) {
                    s.state = Some(tcp_state::name(e.new_state));
                    // Without --full only ESTABLISHED and CLOSE arrive: the state before
                    // ESTABLISHED tells the side.
                    match (e.old_state, e.new_state) {
                        (_, tcp_state::SYN_SENT) | (tcp_state::SYN_SENT, _) => {
                            s.side = Some(Side::Client)
                        }
                        (tcp_state::SYN_RECV, _) => s.side = Some(Side::Server),
                        _ => {}
                    }
                }
                if e.new_state == tcp_state::CLOSE {
                    if e.old_state == 0 {
                        self.overflow.closes_inferred += 1;
                    }
                    self.close(id, &e.hdr, &e.comm, &e.addrs);
                }
            }
            Event::Udp(e) => {
                let by_call = e.hdr.kind == EventKind::UdpSend as u32;
                let c = self.counts(&e.hdr, &e.comm, &e.addrs, by_call);
                if e.hdr.kind == EventKind::UdpSend as u32 {
                    c.sends += 1;
                    c.result(e.ret, false);
                } else {
                    c.datagrams_out += 1;
                }
            }
            Event::Block(e) => {
                self.totals.blocks += 1;
                if let Some(c) = self.known(e.hdr.sock_id) {
                    let ns = e.end_ns.saturating_sub(e.start_ns);
                    c.blocks += 1;
                    c.blocked_ns += ns;
                    c.block_us.add(ns / 1000);
                }
            }
            Event::Ack(e) => {
                let mut acked = Vec::new();
                self.acks.on_ack(e, |w| acked.push(*w));
                for w in &acked {
                    self.acked(w);
                }
            }
        }
    }
}
