//! The summary as text (bcc-style histograms per socket, a table of groups) or as one JSON
//! object.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use super::{Counts, Group, SockSummary, Summary};

/// What `--summary` cannot measure without `--full` (their hooks are not attached): null in
/// the JSON, left out of the text.
const FULL_ONLY: [&str; 11] = [
    "requested_bytes",
    "blocks",
    "blocked_ns",
    "acked_writes",
    "acked_at_close",
    "untimed_writes",
    "block_us",
    "ack_us",
    "fin_sent",
    "fin_received",
    "datagrams_out",
];

#[derive(Serialize)]
struct Limit {
    limit: usize,
}

#[derive(Serialize)]
struct Limits {
    max_sockets: Limit,
    top: Limit,
    max_groups: Limit,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    kind: &'static str,
    full: bool,
    /// Live sockets, then the `--top` closed ones, largest first.
    sockets: Vec<Value>,
    /// The other closed sockets, by command and service port.
    groups: Vec<Value>,
    /// Everything: sockets and groups.
    totals: Value,
    closed_sockets: u64,
    /// Sockets that kept their counts themselves (socket-local storage), at least in part.
    sockets_counting_themselves: u64,
    limits: Limits,
    overflow: &'a super::Overflow,
}

impl Summary {
    /// Rows in output order: live sockets by id, then the kept closed ones, largest first.
    fn rows(&self) -> Vec<&SockSummary> {
        let mut live: Vec<&SockSummary> = self.live.values().collect();
        live.sort_by_key(|s| s.sock_id);
        let mut top: Vec<&SockSummary> = self.closed.top().collect();
        top.sort_by_key(|s| std::cmp::Reverse(s.counts.rank(self.bounds.top_by)));
        live.extend(top);
        live
    }

    fn value(&self, v: &impl Serialize) -> serde_json::Result<Value> {
        let mut v = serde_json::to_value(v)?;
        if !self.full {
            for field in FULL_ONLY {
                v[field] = Value::Null;
            }
        }
        Ok(v)
    }

    pub fn write(&self, out: &mut impl Write, json: bool) -> std::io::Result<()> {
        if json {
            return self.write_json(out);
        }
        for s in self.rows() {
            writeln!(
                out,
                "\nsocket {}{} ({} pid {}) {} > {}{}",
                s.sock_id,
                if s.ino != 0 && s.ino != s.sock_id {
                    format!(" (ino {})", s.ino)
                } else {
                    String::new()
                },
                s.comm,
                s.pid,
                s.laddr,
                s.raddr,
                if s.closed { ", closed" } else { "" }
            )?;
            self.write_counts(out, &s.counts, s.state)?;
        }
        let groups: Vec<&Group> = self.closed.groups().collect();
        if !groups.is_empty() {
            writeln!(
                out,
                "\n{} closed sockets in all; the {} largest above, the rest by command and service port:",
                self.closed.closed,
                self.closed.top().count()
            )?;
            writeln!(
                out,
                "  {:<16} {:<6} {:>5} {:>8} {:>10} {:>14} {:>10} {:>14} {:>7} {:>7}",
                "COMM",
                "SIDE",
                "PORT",
                "SOCKETS",
                "SENDS",
                "COPIED_B",
                "RECVS",
                "READ_B",
                "EAGAIN",
                "RST>/<"
            )?;
            for g in groups {
                let c = &g.counts;
                writeln!(
                    out,
                    "  {:<16} {:<6} {:>5} {:>8} {:>10} {:>14} {:>10} {:>14} {:>7} {:>3}/{:<3}",
                    g.key.comm,
                    format!("{:?}", g.key.side).to_lowercase(),
                    g.key.port,
                    g.sockets,
                    c.sends,
                    c.copied_bytes,
                    c.recvs,
                    c.received_bytes,
                    c.eagain,
                    c.rst_sent,
                    c.rst_received
                )?;
            }
        }
        let t = self.total();
        writeln!(
            out,
            "\nin all: {} sends, {} B copied, {} EAGAIN; {} receives, {} B read",
            t.sends, t.copied_bytes, t.eagain, t.recvs, t.received_bytes
        )?;
        if !self.full {
            writeln!(
                out,
                "(--full adds requested bytes, sleeps, FINs and each write's time to its ACK)"
            )?;
        }
        Ok(())
    }

    fn write_json(&self, out: &mut impl Write) -> std::io::Result<()> {
        let sockets = self
            .rows()
            .into_iter()
            .map(|s| self.value(s))
            .collect::<Result<_, _>>()?;
        let groups = self
            .closed
            .groups()
            .map(|g| self.value(g))
            .collect::<Result<_, _>>()?;
        serde_json::to_writer(
            &mut *out,
            &SummaryJson {
                kind: "summary",
                full: self.full,
                sockets,
                groups,
                totals: self.value(&self.total())?,
                closed_sockets: self.closed.closed,
                sockets_counting_themselves: self.kept_sockets,
                limits: Limits {
                    max_sockets: Limit {
                        limit: self.bounds.max_sockets,
                    },
                    top: Limit {
                        limit: self.bounds.top,
                    },
                    max_groups: Limit {
                        limit: self.bounds.max_groups,
                    },
                },
                overflow: &self.overflow,
            },
        )?;
        writeln!(out)
    }

    fn write_counts(
        &self,
        out: &mut impl Write,
        c: &Counts,
        state: Option<&str>,
    ) -> std::io::Result<()> {
        if self.full {
            writeln!(
                out,
                "  {} sends, {} B requested, {} B copied, {} EAGAIN, {} blocks ({:.3} ms asleep), {} writes acked",
                c.sends,
                c.requested_bytes,
                c.copied_bytes,
                c.eagain,
                c.blocks,
                c.blocked_ns as f64 / 1e6,
                c.acked_writes
            )?;
        } else {
            writeln!(
                out,
                "  {} sends, {} B copied, {} EAGAIN",
                c.sends, c.copied_bytes, c.eagain
            )?;
        }
        if c.pieced_calls > 0 {
            writeln!(
                out,
                "  {} sendfile/splice/sendmmsg calls, each one or more of the sends; {} errors of their pieces the application never saw (not in EAGAIN)",
                c.pieced_calls, c.unseen_errors
            )?;
        }
        if c.untimed_writes > 0 {
            writeln!(
                out,
                "  {} writes not timed to their ACK (more than {} waiting at once)",
                c.untimed_writes,
                trace_common::agg::PENDING_SLOTS
            )?;
        }
        for (name, n) in &c.errors {
            writeln!(out, "  {n} × {name}")?;
        }
        if c.recvs > 0 {
            writeln!(out, "  {} receives, {} B read", c.recvs, c.received_bytes)?;
            for (name, n) in &c.recv_errors {
                writeln!(out, "  {n} receives × {name}")?;
            }
        }
        if let Some(state) = state {
            write!(
                out,
                "  last state {state}; RST sent {}, received {}; ",
                c.rst_sent, c.rst_received
            )?;
            if self.full {
                write!(
                    out,
                    "FIN sent {}, received {}; ",
                    c.fin_sent, c.fin_received
                )?;
            }
            writeln!(out, "{} unread B dropped at close", c.dropped_unread_bytes)?;
        }
        if c.datagrams_out > 0 {
            writeln!(out, "  {} datagrams out", c.datagrams_out)?;
        }
        c.copy_bytes.write(out, "bytes copied per call")?;
        c.recv_bytes.write(out, "bytes read per call")?;
        c.block_us.write(out, "block usecs")?;
        c.ack_us.write(out, "write-to-ACK usecs")
    }
}
