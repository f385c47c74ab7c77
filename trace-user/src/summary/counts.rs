//! What the summary adds up: per socket, per group of closed sockets, and in all.

use std::collections::BTreeMap;

use serde::Serialize;
use trace_common::{Header, SockAddrs, agg::SockAgg};

use crate::{
    format::{self, ErrName},
    hist::Log2Hist,
};

/// Counts that add up across sockets (a socket's, a group's, or the session's).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub sends: u64,
    pub requested_bytes: u64,
    pub copied_bytes: u64,
    pub eagain: u64,
    /// Other errors by name.
    pub errors: BTreeMap<String, u64>,
    /// `sendfile()`, `splice()` and `sendmmsg()` calls (each made one or more of `sends`).
    pub pieced_calls: u64,
    /// Errors of kernel sends the application never got: a later piece of a call whose
    /// earlier pieces copied bytes (the call returned those). Not in `eagain`/`errors`.
    pub unseen_errors: u64,
    pub blocks: u64,
    pub blocked_ns: u64,
    pub acked_writes: u64,
    /// Of those, writes found acked only when the socket closed (ACKs after ESTABLISHED
    /// reach no ACK hook): not in `ack_us`.
    pub acked_at_close: u64,
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
    /// TCP: RSTs and FINs each way, unread bytes a close threw away.
    pub rst_sent: u64,
    pub rst_received: u64,
    pub fin_sent: u64,
    pub fin_received: u64,
    pub dropped_unread_bytes: u64,
    /// UDP: datagrams seen leaving (send calls are counted in `sends`).
    pub datagrams_out: u64,
}

fn merge_names(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (name, n) in from {
        *into.entry(name.clone()).or_default() += n;
    }
}

impl Counts {
    /// Counts a kernel send's result: bytes, or EAGAIN, or another error by name, or an
    /// error its application call did not return (`unseen`).
    pub fn result(&mut self, ret: i64, unseen: bool) {
        if ret < 0 && unseen {
            self.unseen_errors += 1;
        } else if ret >= 0 {
            self.copied_bytes += ret as u64;
            self.copy_bytes.add(ret as u64);
        } else if ret == -i64::from(libc::EAGAIN) {
            self.eagain += 1;
        } else {
            *self.errors.entry(ErrName(ret).to_string()).or_default() += 1;
        }
    }

    /// Counts a receive call's result.
    pub fn recv_result(&mut self, ret: i64) {
        self.recvs += 1;
        if ret >= 0 {
            self.received_bytes += ret as u64;
            self.recv_bytes.add(ret as u64);
        } else {
            *self
                .recv_errors
                .entry(ErrName(ret).to_string())
                .or_default() += 1;
        }
    }

    /// A write acked `ns` after its call started.
    pub fn acked(&mut self, ns: u64) {
        self.acked_writes += 1;
        self.ack_us.add(ns / 1000);
    }

    /// Adds one CPU's in-kernel counts.
    pub fn add_counted(&mut self, a: &SockAgg) {
        self.sends += a.sends();
        self.requested_bytes += a.requested;
        self.copied_bytes += a.copied;
        self.eagain += a.eagain;
        self.unseen_errors += a.unseen_eagain;
        self.pieced_calls += a.pieced_calls;
        self.copy_bytes.add_buckets(&a.copy_bytes);
        self.recvs += a.recvs();
        self.received_bytes += a.received;
        self.recv_bytes.add_buckets(&a.recv_bytes);
        if a.recv_eagain > 0 {
            *self
                .recv_errors
                .entry(ErrName(-i64::from(libc::EAGAIN)).to_string())
                .or_default() += a.recv_eagain;
        }
        self.acked_writes += a.acked_writes + a.call_acked_writes + a.close_acked_writes;
        self.acked_at_close += a.close_acked_writes;
        self.untimed_writes += a.untimed_writes;
        self.ack_us.add_buckets(&a.ack_us);
        self.ack_us.add_buckets(&a.call_ack_us);
    }

    pub fn merge(&mut self, o: &Counts) {
        self.sends += o.sends;
        self.requested_bytes += o.requested_bytes;
        self.copied_bytes += o.copied_bytes;
        self.eagain += o.eagain;
        merge_names(&mut self.errors, &o.errors);
        self.pieced_calls += o.pieced_calls;
        self.unseen_errors += o.unseen_errors;
        self.blocks += o.blocks;
        self.blocked_ns += o.blocked_ns;
        self.acked_writes += o.acked_writes;
        self.acked_at_close += o.acked_at_close;
        self.untimed_writes += o.untimed_writes;
        self.copy_bytes.merge(&o.copy_bytes);
        self.block_us.merge(&o.block_us);
        self.ack_us.merge(&o.ack_us);
        self.recvs += o.recvs;
        self.received_bytes += o.received_bytes;
        merge_names(&mut self.recv_errors, &o.recv_errors);
        self.recv_bytes.merge(&o.recv_bytes);
        self.rst_sent += o.rst_sent;
        self.rst_received += o.rst_received;
        self.fin_sent += o.fin_sent;
        self.fin_received += o.fin_received;
        self.dropped_unread_bytes += o.dropped_unread_bytes;
        self.datagrams_out += o.datagrams_out;
    }

    /// What was counted since `earlier`, an earlier copy of these counts (`export`).
    pub fn minus(&self, earlier: &Counts) -> Counts {
        let names = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, n)| {
                    (
                        k.clone(),
                        n.saturating_sub(then.get(k).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        Counts {
            sends: self.sends.saturating_sub(earlier.sends),
            requested_bytes: self.requested_bytes.saturating_sub(earlier.requested_bytes),
            copied_bytes: self.copied_bytes.saturating_sub(earlier.copied_bytes),
            eagain: self.eagain.saturating_sub(earlier.eagain),
            errors: names(&self.errors, &earlier.errors),
            pieced_calls: self.pieced_calls.saturating_sub(earlier.pieced_calls),
            unseen_errors: self.unseen_errors.saturating_sub(earlier.unseen_errors),
            blocks: self.blocks.saturating_sub(earlier.blocks),
            blocked_ns: self.blocked_ns.saturating_sub(earlier.blocked_ns),
            acked_writes: self.acked_writes.saturating_sub(earlier.acked_writes),
            acked_at_close: self.acked_at_close.saturating_sub(earlier.acked_at_close),
            untimed_writes: self.untimed_writes.saturating_sub(earlier.untimed_writes),
            copy_bytes: self.copy_bytes.minus(&earlier.copy_bytes),
            block_us: self.block_us.minus(&earlier.block_us),
            ack_us: self.ack_us.minus(&earlier.ack_us),
            recvs: self.recvs.saturating_sub(earlier.recvs),
            received_bytes: self.received_bytes.saturating_sub(earlier.received_bytes),
            recv_errors: names(&self.recv_errors, &earlier.recv_errors),
            recv_bytes: self.recv_bytes.minus(&earlier.recv_bytes),
            rst_sent: self.rst_sent.saturating_sub(earlier.rst_sent),
            rst_received: self.rst_received.saturating_sub(earlier.rst_received),
            fin_sent: self.fin_sent.saturating_sub(earlier.fin_sent),
            fin_received: self.fin_received.saturating_sub(earlier.fin_received),
            dropped_unread_bytes: self
                .dropped_unread_bytes
                .saturating_sub(earlier.dropped_unread_bytes),
            datagrams_out: self.datagrams_out.saturating_sub(earlier.datagrams_out),
        }
    }

    /// What `--top` ranks closed sockets by.
    pub fn rank(&self, by: TopBy) -> u64 {
        match by {
            TopBy::Bytes => self.copied_bytes + self.received_bytes,
            TopBy::Asleep => self.blocked_ns,
        }
    }
}

/// How `--top` ranks closed sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TopBy {
    /// Bytes sent and received.
    #[default]
    Bytes,
    /// Time asleep on a full send buffer (measured with --full).
    Asleep,
}

/// Which end of the connection a socket is: its group is named by the service's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Accepted (or the lower of the two ports is local): grouped by local port.
    Server,
    /// Connected out (or the lower port is the remote one): grouped by remote port.
    Client,
}

/// One socket's summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SockSummary {
    pub sock_id: u64,
    /// The inode number (`ss -e`'s `ino`), 0 while unknown; equal to `sock_id` unless the
    /// socket was met before `accept()`.
    pub ino: u64,
    pub pid: u32,
    pub comm: String,
    pub laddr: String,
    pub raddr: String,
    /// The last TCP state seen.
    pub state: Option<&'static str>,
    /// Whether the socket reached CLOSE.
    pub closed: bool,
    #[serde(flatten)]
    pub counts: Counts,
    /// Known from the handshake: an active open is a client.
    #[serde(skip)]
    pub side: Option<Side>,
    /// The task was named by a call (not by a state change, which a packet may cause in
    /// whatever task it interrupted).
    #[serde(skip)]
    pub named_by_call: bool,
    #[serde(skip)]
    pub addrs: SockAddrs,
}

impl SockSummary {
    pub fn new(hdr: &Header, comm: &[u8; 16], a: &SockAddrs, by_call: bool) -> Self {
        let mut s = Self {
            sock_id: hdr.sock_id,
            ..Self::default()
        };
        s.learn(hdr.ino, hdr.pid, comm, a, by_call);
        s
    }

    /// Takes what a later event or count knows better: the inode once accepted, the local
    /// port once connected, the task when first named, and named by a call (`by_call`)
    /// rather than a state change.
    pub fn learn(&mut self, ino: u64, pid: u32, comm: &[u8; 16], a: &SockAddrs, by_call: bool) {
        if ino != 0 {
            self.ino = ino;
        }
        if self.laddr.is_empty() || (a.lport != 0 && self.addrs.lport == 0) {
            self.addrs = *a;
            self.laddr = format!("{}:{}", format::local_ip(a), a.lport);
            self.raddr = format!("{}:{}", format::remote_ip(a), a.rport);
        }
        if pid != 0 && (self.pid == 0 || (by_call && !self.named_by_call)) {
            self.pid = pid;
            self.comm = format::comm_str(comm).to_owned();
            self.named_by_call = by_call;
        }
    }

    /// The side, from the handshake or else from the ports: services listen on the lower.
    pub fn side(&self) -> Side {
        self.side.unwrap_or(
            if self.addrs.rport == 0 || self.addrs.lport <= self.addrs.rport {
                Side::Server
            } else {
                Side::Client
            },
        )
    }
}
