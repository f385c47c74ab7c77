//! The fill report: where the accepted bytes are, the original article's arithmetic redone,
//! and the checks of the experiment against the trace.

use std::io::Write;

use serde::Serialize;

use super::{experiment::Measured, handler::Traced, then::ThenReport};
use crate::{
    cli::FillMode,
    lab::{self, Check, check, checks_as_map},
};

/// The report; serialized as the `fill_report` JSON object (fields in docs/experiments.md).
#[derive(Clone, Debug, Serialize)]
pub struct FillReport {
    pub kind: &'static str,
    pub mode: FillMode,
    pub chunk: u64,
    pub interval_ns: u64,
    pub family: &'static str,
    pub netns: String,
    pub accepted_bytes: u64,
    pub written_bytes: u64,
    pub write_calls: u64,
    pub eagain_count: u64,
    pub client_send_queue_bytes: u64,
    pub client_unsent_bytes: u64,
    pub client_in_flight_bytes: u64,
    pub server_recv_queue_bytes: u64,
    pub last_ack_bytes: u64,
    /// The article's lower bound: accepted bytes the server has not acknowledged.
    pub at_least_in_client_send_buffer: u64,
    pub traced_copied_bytes: u64,
    pub traced_send_events: u64,
    pub traced_eagain_count: u64,
    pub sndbuf: u64,
    pub rcvbuf: u64,
    pub tcp_wmem: [u64; 3],
    pub tcp_rmem: [u64; 3],
    pub tcp_mem: [u64; 3],
    pub tcp_moderate_rcvbuf: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_wait_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_read_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub then: Option<ThenReport>,
    /// `--stacks`: where the writer slept longest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slept_in: Option<crate::stacks::SleptIn>,
    #[serde(serialize_with = "checks_as_map")]
    pub checks: Vec<Check>,
}

impl FillReport {
    pub fn new(
        m: &Measured,
        t: &Traced,
        mode: FillMode,
        chunk: u64,
        interval_ns: u64,
        ipv6: bool,
        netns: String,
    ) -> Self {
        let blocked_ns = m
            .asleep
            .and_then(|a| t.blocks.iter().find(|(s, _)| *s == a.start_ns))
            .map(|(s, e)| e - s);
        let mut checks = vec![
            check(
                "queues_hold_accepted",
                "accepted == client send queue + server receive queue",
                m.accepted_bytes,
                m.client_send_queue + m.server_recv_queue,
            ),
            check(
                "traced_copied_equals_written",
                "traced copied bytes == bytes the client's writes returned",
                t.copied_bytes,
                m.written_bytes,
            ),
            check(
                "traced_eagain_equals_client",
                "traced EAGAINs == EAGAINs the client saw",
                t.eagains,
                m.eagain_count,
            ),
            check(
                "traced_calls_equal_client",
                "traced send calls == client write calls",
                t.sends,
                m.write_calls,
            ),
        ];
        if mode == FillMode::Blocking {
            let b = blocked_ns.unwrap_or(0);
            checks.push(Check {
                name: "block_covers_server_wait",
                what: "traced block (ns) >= time the server waited before reading (ns)",
                left: b,
                right: m.server_wait_ns,
                pass: blocked_ns.is_some() && b >= m.server_wait_ns,
            });
            checks.push(check(
                "server_read_everything",
                "bytes the server read == bytes written",
                m.server_read_bytes,
                m.written_bytes,
            ));
        }
        Self {
            kind: "fill_report",
            mode,
            chunk,
            interval_ns,
            family: if ipv6 { "ipv6" } else { "ipv4" },
            netns,
            accepted_bytes: m.accepted_bytes,
            written_bytes: m.written_bytes,
            write_calls: m.write_calls,
            eagain_count: m.eagain_count,
            client_send_queue_bytes: m.client_send_queue,
            client_unsent_bytes: m.client_unsent,
            client_in_flight_bytes: m.client_send_queue.saturating_sub(m.client_unsent),
            server_recv_queue_bytes: m.server_recv_queue,
            last_ack_bytes: m.last_ack_bytes,
            at_least_in_client_send_buffer: m.accepted_bytes.saturating_sub(m.last_ack_bytes),
            traced_copied_bytes: t.copied_bytes,
            traced_send_events: t.sends,
            traced_eagain_count: t.eagains,
            sndbuf: m.sndbuf,
            rcvbuf: m.rcvbuf,
            tcp_wmem: m.sysctls.tcp_wmem,
            tcp_rmem: m.sysctls.tcp_rmem,
            tcp_mem: m.sysctls.tcp_mem,
            tcp_moderate_rcvbuf: m.sysctls.tcp_moderate_rcvbuf,
            blocked_ns,
            server_wait_ns: (mode == FillMode::Blocking).then_some(m.server_wait_ns),
            server_read_bytes: (mode == FillMode::Blocking).then_some(m.server_read_bytes),
            then: None,
            slept_in: None,
            checks,
        }
    }

    /// Adds the close experiment: its fields, and its checks to the report's.
    pub fn add_then(&mut self, then: ThenReport) {
        self.checks.extend(then.checks.iter().copied());
        self.then = Some(then);
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let r = self;
        let j = |v: [u64; 3]| format!("{} {} {}", v[0], v[1], v[2]);
        let mode = match r.mode {
            FillMode::Nonblocking => "non-blocking",
            FillMode::Blocking => "blocking",
        };
        writeln!(out)?;
        writeln!(
            out,
            "sockbuf fill: {mode} writes of {} B into a connection whose peer never reads ({}, namespace {})",
            r.chunk, r.family, r.netns
        )?;
        writeln!(
            out,
            "  sysctls    tcp_wmem {}   tcp_rmem {}   tcp_mem {} (pages)   tcp_moderate_rcvbuf {}",
            j(r.tcp_wmem),
            j(r.tcp_rmem),
            j(r.tcp_mem),
            r.tcp_moderate_rcvbuf
        )?;
        writeln!(
            out,
            "  buffers    client SO_SNDBUF {} B   server SO_RCVBUF {} B",
            r.sndbuf, r.rcvbuf
        )?;
        writeln!(
            out,
            "  client     {} B accepted in {} write calls, {} EAGAIN",
            r.accepted_bytes, r.write_calls, r.eagain_count
        )?;
        writeln!(
            out,
            "  where      client send queue {} B (unsent {}, in flight {})   server receive queue {} B",
            r.client_send_queue_bytes,
            r.client_unsent_bytes,
            r.client_in_flight_bytes,
            r.server_recv_queue_bytes
        )?;
        writeln!(
            out,
            "  last ACK   the server acknowledged {} B (relative ack {})",
            r.last_ack_bytes,
            r.last_ack_bytes + 1
        )?;
        writeln!(
            out,
            "  so         at least {} B are still in the client's send buffer, and {} acked B wait in the server's receive buffer",
            r.at_least_in_client_send_buffer, r.last_ack_bytes
        )?;
        if let (Some(b), Some(w)) = (r.blocked_ns, r.server_wait_ns) {
            writeln!(
                out,
                "  block      the writer slept {:.1} ms; the server waited {:.1} ms before reading",
                b as f64 / 1e6,
                w as f64 / 1e6
            )?;
        }
        if let Some(s) = &r.slept_in {
            writeln!(
                out,
                "  slept in   {} ({:.1} ms asleep there; stack: {})",
                s.function,
                s.asleep_ns as f64 / 1e6,
                s.frames
                    .user
                    .iter()
                    .take(6)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" < ")
            )?;
        }
        if let Some(t) = &r.then {
            for line in &t.story {
                writeln!(out, "  then       {line}")?;
            }
        }
        lab::write_checks(out, &r.checks)
    }
}
