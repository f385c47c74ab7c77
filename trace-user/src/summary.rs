//! `sockbuf trace --summary`: per-socket totals and log2 histograms at the end, instead of
//! one line per event.

use std::{collections::BTreeMap, io::Write};

use serde::Serialize;
use trace_common::{
    EventKind, Header, SockAddrs,
    agg::{Pending, SockAgg},
    user::Event,
};

use crate::{
    acks::AckMatcher,
    format::{self, ErrName},
    hist::Log2Hist,
    output::Totals,
    session::EventHandler,
};

#[derive(Debug, Default, Serialize)]
pub struct SockSummary {
    pub sock_id: u64,
    pub pid: u32,
    pub comm: String,
    pub laddr: String,
    pub raddr: String,
    pub sends: u64,
    pub requested_bytes: u64,
    pub copied_bytes: u64,
    pub eagain: u64,
    /// Other errors by name.
    pub errors: BTreeMap<String, u64>,
    pub blocks: u64,
    pub blocked_ns: u64,
    pub acked_writes: u64,
    /// Writes whose time to the ACK the kernel could not take (more than
    /// `trace_common::agg::PENDING_SLOTS` waiting at once, or the call's start unseen).
    pub untimed_writes: u64,
    /// Bytes copied per successful call.
    pub copy_bytes: Log2Hist,
    /// Sleeps on a full send buffer, in microseconds.
    pub block_us: Log2Hist,
    /// From a write's call to the ACK of its last byte, in microseconds.
    pub ack_us: Log2Hist,
    /// Receive calls, bytes they copied out, errors by name, and bytes per call.
    pub recvs: u64,
    pub received_bytes: u64,
    pub recv_errors: BTreeMap<String, u64>,
    pub recv_bytes: Log2Hist,
    /// TCP: the last state seen, RSTs and FINs each way, unread bytes a close threw away.
    pub state: Option<&'static str>,
    pub rst_sent: u64,
    pub rst_received: u64,
    pub fin_sent: u64,
    pub fin_received: u64,
    pub dropped_unread_bytes: u64,
    /// UDP: datagrams seen leaving (send calls are counted in `sends`).
    pub datagrams_out: u64,
}

impl SockSummary {
    fn new(hdr: &Header, comm: &[u8; 16], a: &SockAddrs) -> Self {
        Self {
            sock_id: hdr.sock_id,
            pid: hdr.pid,
            comm: format::comm_str(comm).to_owned(),
            laddr: format!("{}:{}", format::local_ip(a), a.lport),
            raddr: format!("{}:{}", format::remote_ip(a), a.rport),
            ..Self::default()
        }
    }

    /// Counts a call's result: bytes, or EAGAIN, or another error by name.
    fn result(&mut self, ret: i64) {
        if ret >= 0 {
            self.copied_bytes += ret as u64;
            self.copy_bytes.add(ret as u64);
        } else if ret == -i64::from(libc::EAGAIN) {
            self.eagain += 1;
        } else {
            *self.errors.entry(ErrName(ret).to_string()).or_default() += 1;
        }
    }
}

/// The socket's summary, created from the first event that names it.
fn sock<'a>(
    socks: &'a mut BTreeMap<u64, SockSummary>,
    hdr: &Header,
    comm: &[u8; 16],
    a: &SockAddrs,
) -> &'a mut SockSummary {
    let s = socks
        .entry(hdr.sock_id)
        .or_insert_with(|| SockSummary::new(hdr, comm, a));
    if a.lport != 0 && s.laddr.ends_with(":0") {
        // Named first at connect(), before the local port was chosen.
        s.laddr = format!("{}:{}", format::local_ip(a), a.lport);
    }
    if s.pid == 0 {
        // Named first by a packet-driven event: take the task from this one.
        s.pid = hdr.pid;
        s.comm = format::comm_str(comm).to_owned();
    }
    s
}

const TCP_CLOSE: u32 = 7;

/// What `--summary` cannot measure without `--full` (their hooks are not attached): null in
/// the JSON, left out of the text.
const FULL_ONLY: [&str; 10] = [
    "requested_bytes",
    "blocks",
    "blocked_ns",
    "acked_writes",
    "untimed_writes",
    "block_us",
    "ack_us",
    "fin_sent",
    "fin_received",
    "datagrams_out",
];

#[derive(Default)]
pub struct Summary {
    /// `--full`: every hook was attached, every field measured.
    pub full: bool,
    pub socks: BTreeMap<u64, SockSummary>,
    pub acks: AckMatcher,
    pub totals: Totals,
}

impl EventHandler for Summary {
    fn on_event(&mut self, ev: &Event) {
        let Self {
            socks,
            acks,
            totals,
            ..
        } = self;
        totals.records_by_kind.count(ev);
        match ev {
            Event::Send(e) => {
                totals.sends += 1;
                let s = sock(socks, &e.hdr, &e.comm, &e.addrs);
                s.sends += 1;
                s.requested_bytes += e.requested;
                s.result(e.ret);
                acks.on_send(e, |w| {
                    totals.acks += 1;
                    if let Some(s) = socks.get_mut(&w.sock_id) {
                        s.acked_writes += 1;
                        s.ack_us.add(w.acked_ns() / 1000);
                    }
                });
            }
            Event::BlockStart(_) => {}
            Event::Recv(e) => {
                let s = sock(socks, &e.hdr, &e.comm, &e.addrs);
                s.recvs += 1;
                if e.ret >= 0 {
                    s.received_bytes += e.ret as u64;
                    s.recv_bytes.add(e.ret as u64);
                } else {
                    *s.recv_errors.entry(ErrName(e.ret).to_string()).or_default() += 1;
                }
            }
            Event::Sock(e) => {
                acks.on_sock(e);
                let s = sock(socks, &e.hdr, &e.comm, &e.addrs);
                match EventKind::from_u32(e.hdr.kind) {
                    Some(EventKind::State) => {
                        s.state = Some(format::tcp_state(e.new_state));
                        if e.new_state == TCP_CLOSE {
                            s.dropped_unread_bytes += u64::from(e.recv.recv_q);
                        }
                    }
                    Some(EventKind::RstOut) => s.rst_sent += 1,
                    Some(EventKind::RstIn) => s.rst_received += 1,
                    Some(EventKind::FinOut) => s.fin_sent += 1,
                    _ => s.fin_received += 1,
                }
            }
            Event::Udp(e) => {
                let s = sock(socks, &e.hdr, &e.comm, &e.addrs);
                if e.hdr.kind == EventKind::UdpSend as u32 {
                    s.sends += 1;
                    s.result(e.ret);
                } else {
                    s.datagrams_out += 1;
                }
            }
            Event::Block(e) => {
                totals.blocks += 1;
                if let Some(s) = socks.get_mut(&e.hdr.sock_id) {
                    let ns = e.end_ns.saturating_sub(e.start_ns);
                    s.blocks += 1;
                    s.blocked_ns += ns;
                    s.block_us.add(ns / 1000);
                }
            }
            Event::Ack(e) => {
                acks.on_ack(e, |w| {
                    totals.acks += 1;
                    if let Some(s) = socks.get_mut(&w.sock_id) {
                        s.acked_writes += 1;
                        s.ack_us.add(w.acked_ns() / 1000);
                    }
                });
            }
        }
    }
}

#[derive(Serialize)]
struct SummaryJson {
    kind: &'static str,
    full: bool,
    sockets: Vec<serde_json::Value>,
}

impl Summary {
    /// Adds one CPU's in-kernel counts of socket `ino` (`--summary` counts successful sends
    /// and receives, EAGAINs and ACKed writes in the kernel; the rest arrived as events).
    pub fn add_counted(&mut self, ino: u64, a: &SockAgg) {
        let hdr = Header {
            pid: a.pid,
            sock_id: ino,
            ..Header::default()
        };
        let s = sock(&mut self.socks, &hdr, &a.comm, &a.addrs);
        s.sends += a.sends;
        s.requested_bytes += a.requested;
        s.copied_bytes += a.copied;
        s.eagain += a.eagain;
        s.copy_bytes.add_buckets(&a.copy_bytes);
        s.recvs += a.recvs;
        s.received_bytes += a.received;
        s.recv_bytes.add_buckets(&a.recv_bytes);
        if a.recv_eagain > 0 {
            *s.recv_errors
                .entry(ErrName(-i64::from(libc::EAGAIN)).to_string())
                .or_default() += a.recv_eagain;
        }
        s.acked_writes += a.acked_writes + a.call_acked_writes;
        s.untimed_writes += a.untimed_writes;
        s.ack_us.add_buckets(&a.ack_us);
        s.ack_us.add_buckets(&a.call_ack_us);
        self.totals.sends += a.sends;
        self.totals.acks += a.acked_writes + a.call_acked_writes;
    }

    /// A socket's writes the kernel still had waiting at the end: those the last ACK covers
    /// came before they were queued (no later ACK took them off); the rest are unacked,
    /// returned as a count.
    pub fn add_waiting(&mut self, p: &Pending) -> u64 {
        let mut unacked = 0;
        for (end, start_ns) in p.waiting() {
            match self.socks.get_mut(&p.ino) {
                Some(s) if p.covered(end) => {
                    s.acked_writes += 1;
                    s.ack_us.add(p.last_ack_ns.saturating_sub(start_ns) / 1000);
                    self.totals.acks += 1;
                }
                _ => unacked += 1,
            }
        }
        unacked
    }

    pub fn write(&self, out: &mut impl Write, json: bool) -> std::io::Result<()> {
        if json {
            let mut sockets = Vec::with_capacity(self.socks.len());
            for s in self.socks.values() {
                let mut v = serde_json::to_value(s)?;
                if !self.full {
                    for field in FULL_ONLY {
                        v[field] = serde_json::Value::Null;
                    }
                }
                sockets.push(v);
            }
            serde_json::to_writer(
                &mut *out,
                &SummaryJson {
                    kind: "summary",
                    full: self.full,
                    sockets,
                },
            )?;
            return writeln!(out);
        }
        for s in self.socks.values() {
            writeln!(
                out,
                "\nsocket {} ({} pid {}) {} > {}",
                s.sock_id, s.comm, s.pid, s.laddr, s.raddr
            )?;
            if self.full {
                writeln!(
                    out,
                    "  {} sends, {} B requested, {} B copied, {} EAGAIN, {} blocks ({:.3} ms asleep), {} writes acked",
                    s.sends,
                    s.requested_bytes,
                    s.copied_bytes,
                    s.eagain,
                    s.blocks,
                    s.blocked_ns as f64 / 1e6,
                    s.acked_writes
                )?;
            } else {
                writeln!(
                    out,
                    "  {} sends, {} B copied, {} EAGAIN",
                    s.sends, s.copied_bytes, s.eagain
                )?;
            }
            if s.untimed_writes > 0 {
                writeln!(
                    out,
                    "  {} writes not timed to their ACK (more than {} waiting at once)",
                    s.untimed_writes,
                    trace_common::agg::PENDING_SLOTS
                )?;
            }
            for (name, n) in &s.errors {
                writeln!(out, "  {n} × {name}")?;
            }
            if s.recvs > 0 {
                writeln!(out, "  {} receives, {} B read", s.recvs, s.received_bytes)?;
                for (name, n) in &s.recv_errors {
                    writeln!(out, "  {n} receives × {name}")?;
                }
            }
            if let Some(state) = s.state {
                write!(
                    out,
                    "  last state {state}; RST sent {}, received {}; ",
                    s.rst_sent, s.rst_received
                )?;
                if self.full {
                    write!(
                        out,
                        "FIN sent {}, received {}; ",
                        s.fin_sent, s.fin_received
                    )?;
                }
                writeln!(out, "{} unread B dropped at close", s.dropped_unread_bytes)?;
            }
            if s.datagrams_out > 0 {
                writeln!(out, "  {} datagrams out", s.datagrams_out)?;
            }
            s.copy_bytes.write(out, "bytes copied per call")?;
            s.recv_bytes.write(out, "bytes read per call")?;
            s.block_us.write(out, "block usecs")?;
            s.ack_us.write(out, "write-to-ACK usecs")?;
        }
        if !self.full {
            writeln!(
                out,
                "\n(--full adds requested bytes, sleeps, FINs and each write's time to its ACK)"
            )?;
        }
        Ok(())
    }
}
