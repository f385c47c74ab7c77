//! Matches ACK progress to the writes it covers: a write is delivered when the peer's ACK
//! passes its last byte. The kernel reports each ACK that advances over traced data; this side
//! keeps, per socket, the writes still waiting and the recent ACKs (an ACK on another CPU can
//! reach the ring buffer before the send event of the write it covers).

use std::collections::{HashMap, VecDeque};

use trace_common::{AckEvent, EventKind, SendEvent, SockEvent, tcp_state};

/// A write whose bytes the peer has acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckedWrite {
    pub sock_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub seq_start: u64,
    pub seq_end: u64,
    /// When the write's send call started.
    pub write_ns: u64,
    /// When the covering ACK arrived, or what else proved it (`settled_by`).
    pub ack_ts_ns: u64,
    /// What proved the bytes acknowledged.
    pub settled_by: Settled,
}

/// What proved a write's bytes acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// An ACK seen arriving.
    Ack,
    /// A state change that showed them acknowledged (`bytes_acked` then): ACKs reach the
    /// ACK hook only while the connection is ESTABLISHED, so those after `shutdown()` or
    /// `close()` show up this way (FIN_WAIT2: the FIN and every byte before it acked). Its
    /// time is an upper bound.
    State,
    /// The call's own return, whose send queue showed them acknowledged, with no ACK seen
    /// for them: a call no hook saw begin (io_uring's, where the backend opens calls at
    /// the send syscalls), so that the ACK arriving during it (loopback) was not watched
    /// for. Its time is an upper bound.
    Return,
}

impl Settled {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::State => "state",
            Self::Return => "return",
        }
    }

    /// Whether the time is an upper bound rather than the ACK's own.
    pub fn upper_bound(self) -> bool {
        self != Self::Ack
    }
}

impl AckedWrite {
    /// From the send call's start to the ACK that covered its last byte.
    pub fn acked_ns(&self) -> u64 {
        self.ack_ts_ns.saturating_sub(self.write_ns)
    }
}

#[derive(Default)]
struct SockAcks {
    pending: VecDeque<AckedWrite>,
    /// Writes a layer above TCP took without passing them on yet (see `on_send`).
    held: Vec<AckedWrite>,
    /// (acked offset, time) of recent ACKs, oldest first.
    recent: VecDeque<(u64, u64)>,
}

/// Bounds per socket, so a peer that never ACKs cannot grow memory without limit.
const MAX_PENDING: usize = 1 << 16;
const MAX_RECENT: usize = 64;

pub struct AckMatcher {
    socks: HashMap<u64, SockAcks>,
    /// Sockets followed at once (`--max-sockets`): writes on sockets past it are not matched.
    max_sockets: usize,
    /// Writes dropped from a full pending queue, or on a socket past `max_sockets`: never
    /// matched to an ACK, counted as unacked.
    pub dropped: u64,
    /// Writes still waiting when their socket closed.
    closed_unacked: u64,
}

impl Default for AckMatcher {
    fn default() -> Self {
        Self::new(trace_common::agg::AGG_ENTRIES as usize)
    }
}

impl AckMatcher {
    pub fn new(max_sockets: usize) -> Self {
        Self {
            socks: HashMap::new(),
            max_sockets,
            dropped: 0,
            closed_unacked: 0,
        }
    }

    pub fn on_send(&mut self, e: &SendEvent, mut out: impl FnMut(&AckedWrite)) {
        if e.ret <= 0 {
            return;
        }
        let w = AckedWrite {
            sock_id: e.hdr.sock_id,
            pid: e.hdr.pid,
            tid: e.hdr.tid,
            seq_start: e.seq_start(),
            seq_end: e.seq_end,
            write_ns: if e.start_ns != 0 {
                e.start_ns
            } else {
                e.hdr.ts_ns
            },
            ack_ts_ns: 0,
            settled_by: Settled::Ack,
        };
        if self.socks.len() >= self.max_sockets && !self.socks.contains_key(&w.sock_id) {
            self.dropped += 1;
            return;
        }
        let s = self.socks.entry(w.sock_id).or_default();
        if e.tcp_bytes() == Some(0) {
            // A layer above TCP (kTLS) holds the bytes (a record left open by MSG_MORE):
            // they enter TCP with a later call's record, and are acked with it.
            s.held.push(w);
            return;
        }
        let held = std::mem::take(&mut s.held);
        for mut h in held {
            (h.seq_start, h.seq_end) = (w.seq_start, w.seq_end);
            self.settle(h, e, &mut out);
        }
        self.settle(w, e, out);
    }

    /// Write `w` of send event `e` is acked by an ACK seen already, by the send queue at the
    /// call's return, or waits.
    fn settle(&mut self, mut w: AckedWrite, e: &SendEvent, mut out: impl FnMut(&AckedWrite)) {
        let s = self.socks.entry(w.sock_id).or_default();
        if let Some(&(_, ts)) = s.recent.iter().find(|(acked, _)| *acked >= w.seq_end) {
            w.ack_ts_ns = ts;
            out(&w);
            return;
        }
        // An ACK the kernel reported comes before the send event that returned after it
        // (one ring buffer, in order of reservation): none came, yet it was acked.
        if e.queue.acked >= w.seq_end {
            w.ack_ts_ns = e.hdr.ts_ns;
            w.settled_by = Settled::Return;
            out(&w);
            return;
        }
        if s.pending.len() == MAX_PENDING {
            s.pending.pop_front();
            self.dropped += 1;
        }
        s.pending.push_back(w);
    }

    pub fn on_ack(&mut self, e: &AckEvent, mut out: impl FnMut(&AckedWrite)) {
        if self.socks.len() >= self.max_sockets && !self.socks.contains_key(&e.hdr.sock_id) {
            return;
        }
        let s = self.socks.entry(e.hdr.sock_id).or_default();
        if s.recent.len() == MAX_RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back((e.acked, e.hdr.ts_ns));
        while s.pending.front().is_some_and(|w| w.seq_end <= e.acked) {
            let mut w = s.pending.pop_front().expect("checked");
            w.ack_ts_ns = e.hdr.ts_ns;
            out(&w);
        }
    }

    /// A lifecycle event: its send queue says how much the peer had acknowledged then, which
    /// settles the writes it covers (after the connection left ESTABLISHED no ACK is seen
    /// arriving); the socket's state goes when it reaches CLOSE.
    pub fn on_sock(&mut self, e: &SockEvent, mut out: impl FnMut(&AckedWrite)) {
        if let Some(s) = self.socks.get_mut(&e.hdr.sock_id) {
            while s.pending.front().is_some_and(|w| w.seq_end <= e.send.acked) {
                let mut w = s.pending.pop_front().expect("checked");
                w.ack_ts_ns = e.hdr.ts_ns;
                w.settled_by = Settled::State;
                out(&w);
            }
        }
        if e.hdr.kind == EventKind::State as u32 && e.new_state == tcp_state::CLOSE {
            self.close(e.hdr.sock_id);
        }
    }

    /// The socket reached CLOSE: no ACK of it is reported any more (the kernel reports those
    /// of established sockets), so what is kept for it goes, and a long trace of many short
    /// connections does not grow. Its waiting writes stay counted as unacked.
    pub fn close(&mut self, sock_id: u64) {
        if let Some(s) = self.socks.remove(&sock_id) {
            self.closed_unacked += (s.pending.len() + s.held.len()) as u64;
        }
    }

    /// Writes still waiting for an ACK, or left waiting when their socket closed.
    pub fn unacked(&self) -> usize {
        self.socks
            .values()
            .map(|s| s.pending.len() + s.held.len())
            .sum::<usize>()
            + (self.closed_unacked + self.dropped) as usize
    }

    /// Sockets followed now.
    pub fn sockets(&self) -> usize {
        self.socks.len()
    }
}

#[cfg(test)]
mod tests {
    use trace_common::{Header, SendQueue, SockAddrs};

    use super::*;

    fn send(ts: u64, copied: i64, seq_end: u64) -> SendEvent {
        SendEvent {
            hdr: Header {
                kind: EventKind::Send as u32,
                cpu: 0,
                ts_ns: ts,
                pid: 1,
                tid: 2,
                sock_id: 7,
                ino: 7,
            },
            comm: [0; 16],
            addrs: SockAddrs::default(),
            start_ns: ts - 1,
            requested: copied as u64,
            ret: copied,
            msg_flags: 0,
            flags: 0,
            queue: SendQueue::default(),
            seq_end,
            call: Default::default(),
            tcp_bytes: 0,
            stacks: trace_common::StackIds::NONE,
        }
    }

    fn ack(ts: u64, acked: u64) -> AckEvent {
        AckEvent {
            hdr: Header {
                kind: EventKind::Ack as u32,
                cpu: 0,
                ts_ns: ts,
                pid: 0,
                tid: 0,
                sock_id: 7,
                ino: 7,
            },
            prev_acked: 0,
            acked,
        }
    }

    #[test]
    fn ack_after_writes_covers_each_once() {
        let mut m = AckMatcher::default();
        let mut got = Vec::new();
        m.on_send(&send(10, 100, 100), |w| got.push(*w));
        m.on_send(&send(20, 100, 200), |w| got.push(*w));
        m.on_ack(&ack(30, 150), |w| got.push(*w));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].seq_end, got[0].acked_ns()), (100, 21));
        m.on_ack(&ack(40, 200), |w| got.push(*w));
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].seq_start, 100);
        assert_eq!(m.unacked(), 0);
    }

    #[test]
    fn ack_seen_before_its_write() {
        let mut m = AckMatcher::default();
        let mut got = Vec::new();
        m.on_ack(&ack(15, 100), |w| got.push(*w));
        m.on_send(&send(20, 100, 100), |w| got.push(*w));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ack_ts_ns, 15);
    }

    #[test]
    fn a_closed_socket_is_forgotten_its_waiting_writes_still_unacked() {
        let mut m = AckMatcher::default();
        m.on_send(&send(10, 100, 100), |_| {});
        m.on_send(&send(20, 100, 200), |_| {});
        m.on_ack(&ack(30, 100), |_| {});
        m.close(7);
        assert!(m.socks.is_empty());
        assert_eq!(m.unacked(), 1);
        m.close(7);
        assert_eq!(m.unacked(), 1, "closing twice counts once");
    }

    #[test]
    fn writes_a_layer_holds_are_acked_with_the_record_that_carries_them() {
        // kTLS: 500 B held in an open record (MSG_MORE), then 700 B close it: one record of
        // 1 229 B enters TCP, and its ACK delivers both writes.
        let ktls = |ts, copied, tcp_bytes, seq_end| SendEvent {
            flags: trace_common::SEND_F_TCP_BYTES,
            tcp_bytes,
            ..send(ts, copied, seq_end)
        };
        let mut m = AckMatcher::default();
        let mut got = Vec::new();
        m.on_send(&ktls(10, 500, 0, 0), |w| got.push(*w));
        assert_eq!(m.unacked(), 1, "held, not acked by what came before");
        m.on_send(&ktls(20, 700, 1_229, 1_229), |w| got.push(*w));
        assert!(got.is_empty());
        m.on_ack(&ack(30, 1_229), |w| got.push(*w));
        let spans: Vec<_> = got
            .iter()
            .map(|w| (w.seq_start, w.seq_end, w.write_ns))
            .collect();
        assert_eq!(spans, [(0, 1_229, 9), (0, 1_229, 19)]);
        assert_eq!(m.unacked(), 0);
    }

    #[test]
    fn failed_writes_wait_for_nothing() {
        let mut m = AckMatcher::default();
        m.on_send(&send(10, -11, 0), |_| panic!("no ack for EAGAIN"));
        assert_eq!(m.unacked(), 0);
    }
}
