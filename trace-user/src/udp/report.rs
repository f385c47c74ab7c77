//! The UDP report: what the sender sent and the receiver got, against what the trace saw
//! (send calls, corked bytes, datagrams leaving, receive calls).

use std::io::Write;

use serde::Serialize;
use trace_common::{EventKind, RecvEvent, UdpEvent, user::Event};

use super::experiment::{Measured, Plan};
use crate::{
    lab::{self, Check, check, checks_as_map},
    session::EventHandler,
    trace::Printer,
};

const MSG_MORE: u32 = 0x8000;

/// Prints events like `sockbuf trace` and keeps the UDP and receive events.
pub struct UdpHandler {
    pub printer: Printer,
    pub udp: Vec<UdpEvent>,
    pub recvs: Vec<RecvEvent>,
}

impl EventHandler for UdpHandler {
    fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::Udp(e) => self.udp.push(*e),
            Event::Recv(e) => self.recvs.push(*e),
            _ => {}
        }
        self.printer.on_event(ev);
    }

    fn on_batch_end(&mut self) {
        self.printer.on_batch_end();
    }
}

/// Serialized as the `udp_report` JSON object (fields in docs/experiments.md).
#[derive(Debug, Serialize)]
pub struct UdpReport {
    pub kind: &'static str,
    pub msg_more: bool,
    pub count: u32,
    pub size: u32,
    pub netns: String,
    pub sndbuf: u64,
    pub rcvbuf: u64,
    pub sent_bytes: u64,
    pub first_waiting_bytes: u64,
    pub received_datagrams: Vec<u64>,
    pub traced_send_calls: u64,
    pub traced_msg_more_calls: u64,
    /// Payload bytes corked after each traced send call.
    pub traced_corked_after: Vec<u32>,
    /// Payload of each datagram the trace saw leave.
    pub traced_datagrams_out: Vec<u64>,
    pub traced_recv_calls: u64,
    pub traced_recv_bytes: u64,
    #[serde(serialize_with = "checks_as_map")]
    pub checks: Vec<Check>,
}

fn kind(e: &UdpEvent, k: EventKind) -> bool {
    e.hdr.kind == k as u32
}

impl UdpReport {
    pub fn new(plan: Plan, m: &Measured, h: &UdpHandler, netns: String) -> Self {
        let sends: Vec<&UdpEvent> = h
            .udp
            .iter()
            .filter(|e| e.hdr.sock_id == m.sender_ino && kind(e, EventKind::UdpSend))
            .collect();
        let outs: Vec<&UdpEvent> = h
            .udp
            .iter()
            .filter(|e| e.hdr.sock_id == m.sender_ino && kind(e, EventKind::UdpOut))
            .collect();
        let recvs: Vec<&RecvEvent> = h
            .recvs
            .iter()
            .filter(|e| e.hdr.sock_id == m.receiver_ino)
            .collect();
        let (count, size) = (u64::from(plan.count), u64::from(plan.size));
        let expected_out: Vec<u64> = if plan.msg_more {
            vec![count * size]
        } else {
            vec![size; plan.count as usize]
        };
        let expected_corked: Vec<u32> = (1..=plan.count)
            .map(|i| {
                if plan.msg_more && i < plan.count {
                    i * plan.size
                } else {
                    0
                }
            })
            .collect();
        let corked: Vec<u32> = sends.iter().map(|e| e.corked).collect();
        let out_sizes: Vec<u64> = outs.iter().map(|e| e.ret as u64).collect();
        // The last send that carried MSG_MORE: nothing may leave before it returned.
        let last_corking = sends
            .iter()
            .rev()
            .find(|e| e.msg_flags & MSG_MORE != 0)
            .map_or(0, |e| e.hdr.ts_ns);
        let early = outs.iter().filter(|e| e.hdr.ts_ns < last_corking).count() as u64;
        let more_calls = sends.iter().filter(|e| e.msg_flags & MSG_MORE != 0).count() as u64;
        let recv_bytes: u64 = recvs.iter().map(|e| e.ret.max(0) as u64).sum();
        let received: u64 = m.datagrams.iter().sum();
        let checks = vec![
            check(
                "traced_sends_equal_calls",
                "traced UDP send calls == the sender's calls",
                sends.len() as u64,
                count,
            ),
            check(
                "traced_bytes_equal_sent",
                "traced bytes accepted == bytes the sender's calls returned",
                sends.iter().map(|e| e.ret.max(0) as u64).sum(),
                m.sent_bytes,
            ),
            check(
                "traced_msg_more_flags",
                "traced calls with MSG_MORE == calls made with it",
                more_calls,
                if plan.msg_more { count - 1 } else { 0 },
            ),
            Check {
                name: "corked_bytes_grow",
                what: "send calls whose traced corked bytes are as expected (i × size while corking, then 0)",
                left: corked
                    .iter()
                    .zip(&expected_corked)
                    .filter(|(a, b)| a == b)
                    .count() as u64,
                right: count,
                pass: corked == expected_corked,
            },
            check(
                "nothing_left_while_corked",
                "datagrams the trace saw leave before the last MSG_MORE call returned",
                early,
                0,
            ),
            Check {
                name: "datagrams_out_as_expected",
                what: "traced datagrams out (one of count × size with MSG_MORE, else count of size)",
                left: out_sizes.len() as u64,
                right: expected_out.len() as u64,
                pass: out_sizes == expected_out,
            },
            Check {
                name: "receiver_got_what_left",
                what: "datagrams the receiver read == traced datagrams out (sizes compared too)",
                left: m.datagrams.len() as u64,
                right: out_sizes.len() as u64,
                pass: m.datagrams == out_sizes,
            },
            check(
                "traced_recv_bytes_equal_read",
                "traced bytes received == bytes the receiver read",
                recv_bytes,
                received,
            ),
            check(
                "traced_recv_calls_equal_calls",
                "traced receive calls == the receiver's calls (the last got EAGAIN)",
                recvs.len() as u64,
                m.recv_calls,
            ),
        ];
        Self {
            kind: "udp_report",
            msg_more: plan.msg_more,
            count: plan.count,
            size: plan.size,
            netns,
            sndbuf: m.sndbuf,
            rcvbuf: m.rcvbuf,
            sent_bytes: m.sent_bytes,
            first_waiting_bytes: m.first_waiting,
            received_datagrams: m.datagrams.clone(),
            traced_send_calls: sends.len() as u64,
            traced_msg_more_calls: more_calls,
            traced_corked_after: corked,
            traced_datagrams_out: out_sizes,
            traced_recv_calls: recvs.len() as u64,
            traced_recv_bytes: recv_bytes,
            checks,
        }
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let r = self;
        writeln!(out)?;
        writeln!(
            out,
            "sockbuf udp: {} sends of {} B on a connected UDP socket{} (namespace {})",
            r.count,
            r.size,
            if r.msg_more {
                ", all but the last with MSG_MORE"
            } else {
                ""
            },
            r.netns
        )?;
        writeln!(
            out,
            "  buffers    sender SO_SNDBUF {} B   receiver SO_RCVBUF {} B",
            r.sndbuf, r.rcvbuf
        )?;
        writeln!(
            out,
            "  sender     {} B accepted; corked after each call (traced): {:?}",
            r.sent_bytes, r.traced_corked_after
        )?;
        writeln!(
            out,
            "  wire       datagrams that left (traced): {:?}",
            r.traced_datagrams_out
        )?;
        writeln!(
            out,
            "  receiver   first datagram waiting {} B (SIOCINQ); read {:?}",
            r.first_waiting_bytes, r.received_datagrams
        )?;
        lab::write_checks(out, &r.checks)
    }
}
