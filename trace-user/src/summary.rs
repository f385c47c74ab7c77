//! `sockbuf trace --summary`: per-socket totals and log2 histograms at the end, instead of
//! one line per event.

use std::{collections::BTreeMap, io::Write};

use serde::Serialize;
use trace_common::{SendEvent, user::Event};

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
    /// Bytes copied per successful call.
    pub copy_bytes: Log2Hist,
    /// Sleeps on a full send buffer, in microseconds.
    pub block_us: Log2Hist,
    /// From a write's call to the ACK of its last byte, in microseconds.
    pub ack_us: Log2Hist,
}

impl SockSummary {
    fn new(e: &SendEvent) -> Self {
        Self {
            sock_id: e.hdr.sock_id,
            pid: e.hdr.pid,
            comm: format::comm_str(&e.comm).to_owned(),
            laddr: format!("{}:{}", format::local_ip(&e.addrs), e.addrs.lport),
            raddr: format!("{}:{}", format::remote_ip(&e.addrs), e.addrs.rport),
            ..Self::default()
        }
    }
}

#[derive(Default)]
pub struct Summary {
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
        } = self;
        totals.records_by_kind.count(ev);
        match ev {
            Event::Send(e) => {
                totals.sends += 1;
                let s = socks
                    .entry(e.hdr.sock_id)
                    .or_insert_with(|| SockSummary::new(e));
                s.sends += 1;
                s.requested_bytes += e.requested;
                if e.ret >= 0 {
                    s.copied_bytes += e.ret as u64;
                    s.copy_bytes.add(e.ret as u64);
                } else if e.ret == -i64::from(libc::EAGAIN) {
                    s.eagain += 1;
                } else {
                    *s.errors.entry(ErrName(e.ret).to_string()).or_default() += 1;
                }
                acks.on_send(e, |w| {
                    totals.acks += 1;
                    if let Some(s) = socks.get_mut(&w.sock_id) {
                        s.acked_writes += 1;
                        s.ack_us.add(w.acked_ns() / 1000);
                    }
                });
            }
            Event::BlockStart(_) | Event::Recv(_) | Event::Sock(_) | Event::Udp(_) => {}
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
struct SummaryJson<'a> {
    kind: &'static str,
    sockets: Vec<&'a SockSummary>,
}

impl Summary {
    pub fn write(&self, out: &mut impl Write, json: bool) -> std::io::Result<()> {
        if json {
            let sockets = self.socks.values().collect();
            serde_json::to_writer(
                &mut *out,
                &SummaryJson {
                    kind: "summary",
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
            for (name, n) in &s.errors {
                writeln!(out, "  {n} × {name}")?;
            }
            s.copy_bytes.write(out, "bytes copied per call")?;
            s.block_us.write(out, "block usecs")?;
            s.ack_us.write(out, "write-to-ACK usecs")?;
        }
        Ok(())
    }
}
