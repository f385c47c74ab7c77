//! `top`'s rows: each socket's figures over the last interval, from two peeks at the
//! summary's counts (the kernel's and the streamed events'), the sleeps seen, and the socket
//! table read at the refresh.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use trace_common::tcp_state;

use super::{diag::Diag, owners::Owners};
use crate::{
    hist::Log2Hist,
    summary::{Counts, SockSummary},
};

/// One socket over one interval. Rates are per second of the interval; the totals (`sent_bytes`
/// …) count from `top`'s start. `None`: not known for this socket (it has closed, or is not
/// in this network namespace's table) or not measured (`--full`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    pub sock_id: u64,
    pub pid: u32,
    pub comm: String,
    pub laddr: String,
    pub raddr: String,
    pub state: &'static str,
    pub send_q: Option<u32>,
    pub unsent: Option<u32>,
    pub in_flight: Option<u32>,
    pub recv_q: Option<u32>,
    pub sndbuf: Option<u32>,
    /// `wmem_queued` as a share of `sndbuf`: how full the send buffer is.
    pub sndbuf_used_pct: Option<f64>,
    pub send_bytes_per_s: f64,
    pub recv_bytes_per_s: f64,
    pub sends_per_s: f64,
    pub eagain_per_s: f64,
    /// Time the socket's writers slept on a full send buffer, as a share of the interval
    /// (above 100 with several writers asleep at once). `--full`.
    pub asleep_pct: Option<f64>,
    /// Write-to-ACK time of the writes acked in the interval, median and 99th percentile:
    /// the upper bound of their log2 bucket, in microseconds. `--full`.
    pub ack_p50_us: Option<u64>,
    pub ack_p99_us: Option<u64>,
    pub rsts: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub sends: u64,
    pub eagain: u64,
    /// Intervals since the socket closed (0: it closed in this one); `None` while open.
    pub closed_ago: Option<u32>,
}

/// What a row's rates are the difference of.
#[derive(Clone, Debug, Default)]
struct Seen {
    counts: Counts,
    row: Row,
    /// Set once closed: counts down the intervals its faded row stays.
    closed_ago: Option<u32>,
}

/// Rows keep coming for this many intervals after their socket closed.
pub const FADE_INTERVALS: u32 = 3;

/// Every socket seen, by id, to difference the next peek against.
#[derive(Default)]
pub struct Rows {
    seen: HashMap<u64, Seen>,
    owners: Owners,
}

/// Which sockets of the table get a row though sockbuf counted nothing on them (idle, or a
/// writer stuck since before `top` started): all but listeners when no task filter is set
/// (the table does not say which task a socket is), on `port` when given.
#[derive(Clone, Copy, Debug)]
pub struct TableRows {
    pub all: bool,
    pub port: Option<u16>,
}

/// What one refresh brings.
pub struct Refresh<'a> {
    /// The summary's rows (`Summary::peek`).
    pub peeked: Vec<SockSummary>,
    /// The socket table now, by inode.
    pub table: &'a HashMap<u64, Diag>,
    /// Each socket's time asleep in the interval (`None`: not measured).
    pub asleep_ns: Option<HashMap<u64, u64>>,
    /// Sockets with a writer asleep now: (pid, comm).
    pub sleepers: Option<&'a HashMap<u64, (u32, String)>>,
    pub table_rows: TableRows,
    pub secs: f64,
}

/// The diag table's state is a byte.
const TCP_LISTEN: u8 = tcp_state::LISTEN as u8;

/// A row's source for a socket only the table (and maybe a sleeping writer) knows.
fn from_table(ino: u64, d: &Diag, who: Option<&(u32, String)>) -> SockSummary {
    SockSummary {
        sock_id: ino,
        ino,
        pid: who.map_or(0, |w| w.0),
        comm: who.map_or_else(String::new, |w| w.1.clone()),
        laddr: d.laddr.clone(),
        raddr: d.raddr.clone(),
        ..SockSummary::default()
    }
}

impl Rows {
    /// The rows of the interval that ends with refresh `r`.
    pub fn update(&mut self, r: Refresh<'_>) -> Vec<Row> {
        let mut all = r.peeked;
        // An accepted socket met before `accept()` gave it an inode has another id, and no
        // inode until a call of its own: found in the table by its addresses.
        let by_addrs: HashMap<(&str, &str), u64> = r
            .table
            .iter()
            .map(|(&ino, d)| ((d.laddr.as_str(), d.raddr.as_str()), ino))
            .collect();
        for s in all
            .iter_mut()
            .filter(|s| !r.table.contains_key(&s.ino) && !r.table.contains_key(&s.sock_id))
        {
            if let Some(&ino) = by_addrs.get(&(s.laddr.as_str(), s.raddr.as_str())) {
                s.ino = ino;
            }
        }
        let mut covered: HashSet<u64> = all.iter().flat_map(|s| [s.sock_id, s.ino]).collect();
        for (&sock, who) in r.sleepers.into_iter().flatten() {
            if covered.insert(sock) {
                let mut s = r
                    .table
                    .get(&sock)
                    .map_or_else(SockSummary::default, |d| from_table(sock, d, Some(who)));
                (s.sock_id, s.pid, s.comm) = (sock, who.0, who.1.clone());
                all.push(s);
            }
        }
        if r.table_rows.all {
            for (&ino, d) in r.table {
                let port_ok = r
                    .table_rows
                    .port
                    .is_none_or(|p| d.lport == p || d.rport == p);
                if d.state != TCP_LISTEN && port_ok && covered.insert(ino) {
                    all.push(from_table(ino, d, None));
                }
            }
        }
        // Sockets no call named: their process, as `ss -p` finds it.
        let nameless: HashSet<u64> = all.iter().filter(|s| s.pid == 0).map(|s| s.ino).collect();
        if !nameless.is_empty() {
            let owners = self.owners.of(&nameless);
            for s in all.iter_mut().filter(|s| s.pid == 0) {
                if let Some((pid, comm)) = owners.get(&s.ino) {
                    (s.pid, s.comm) = (*pid, comm.clone());
                }
            }
        }
        let mut fresh = HashMap::with_capacity(all.len());
        for mut s in all {
            let before = self.seen.remove(&s.sock_id).unwrap_or_default();
            let d = r.table.get(&s.ino).or_else(|| r.table.get(&s.sock_id));
            // A listener moves no bytes of its own: its accepted sockets have the rows.
            if d.is_some_and(|d| d.state == TCP_LISTEN) || s.state == Some("LISTEN") {
                continue;
            }
            if let Some(d) = d.filter(|_| s.laddr.is_empty()) {
                (s.laddr, s.raddr) = (d.laddr.clone(), d.raddr.clone());
            }
            let mut row = row_of(&s, &before.counts, d, r.secs);
            row.asleep_pct = r
                .asleep_ns
                .as_ref()
                .map(|m| m.get(&s.sock_id).copied().unwrap_or(0) as f64 / (r.secs * 1e7).max(1.0));
            let closed_ago = s.closed.then_some(0);
            row.closed_ago = closed_ago;
            fresh.insert(
                s.sock_id,
                Seen {
                    counts: s.counts,
                    row,
                    closed_ago,
                },
            );
        }
        // Sockets closed in earlier intervals: shown, quiet, until they fade out.
        for (id, mut old) in self.seen.drain() {
            let Some(ago) = old.closed_ago else {
                continue; // gone from the kernel's table and the socket table: gone
            };
            if ago + 1 >= FADE_INTERVALS {
                continue;
            }
            old.closed_ago = Some(ago + 1);
            old.row = quiet(&old.row, ago + 1);
            fresh.insert(id, old);
        }
        self.seen = fresh;
        self.seen.values().map(|s| s.row.clone()).collect()
    }
}

fn per_s(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

fn row_of(s: &SockSummary, before: &Counts, d: Option<&Diag>, secs: f64) -> Row {
    let c = &s.counts;
    let live = d.filter(|_| !s.closed);
    let timed = c.ack_us.count > before.ack_us.count;
    let acked = timed.then(|| c.ack_us.minus(&before.ack_us));
    Row {
        sock_id: s.sock_id,
        pid: s.pid,
        comm: s.comm.clone(),
        laddr: s.laddr.clone(),
        raddr: s.raddr.clone(),
        state: match (live, s.closed) {
            (_, true) => "CLOSE",
            (Some(d), _) => tcp_state::name(u32::from(d.state)),
            (None, _) => s.state.unwrap_or("-"),
        },
        send_q: live.map(|d| d.send_q),
        unsent: live.map(|d| d.unsent),
        in_flight: live.map(Diag::in_flight),
        recv_q: live.map(|d| d.recv_q),
        sndbuf: live.map(|d| d.sndbuf),
        sndbuf_used_pct: live
            .filter(|d| d.sndbuf > 0)
            .map(|d| 100.0 * f64::from(d.wmem_queued) / f64::from(d.sndbuf)),
        send_bytes_per_s: per_s(c.copied_bytes, before.copied_bytes, secs),
        recv_bytes_per_s: per_s(c.received_bytes, before.received_bytes, secs),
        sends_per_s: per_s(c.sends, before.sends, secs),
        eagain_per_s: per_s(c.eagain, before.eagain, secs),
        asleep_pct: None,
        ack_p50_us: acked.as_ref().and_then(|h| percentile(h, 0.50)),
        ack_p99_us: acked.as_ref().and_then(|h| percentile(h, 0.99)),
        rsts: c.rst_sent + c.rst_received,
        sent_bytes: c.copied_bytes,
        received_bytes: c.received_bytes,
        sends: c.sends,
        eagain: c.eagain,
        closed_ago: None,
    }
}

/// A closed socket's row in a later interval: nothing happens on it any more.
fn quiet(r: &Row, ago: u32) -> Row {
    Row {
        send_bytes_per_s: 0.0,
        recv_bytes_per_s: 0.0,
        sends_per_s: 0.0,
        eagain_per_s: 0.0,
        asleep_pct: r.asleep_pct.map(|_| 0.0),
        ack_p50_us: None,
        ack_p99_us: None,
        closed_ago: Some(ago),
        ..r.clone()
    }
}

/// The upper bound of the bucket holding quantile `q` of `h`'s values.
fn percentile(h: &Log2Hist, q: f64) -> Option<u64> {
    let rank = ((h.count as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    h.rows().find_map(|(_, hi, n)| {
        seen += n;
        (seen >= rank).then_some(hi)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_the_bucket_bound() {
        let mut h = Log2Hist::default();
        for v in [1, 2, 3, 100, 100, 100, 100, 100, 100, 5000] {
            h.add(v);
        }
        assert_eq!(percentile(&h, 0.5), Some(127));
        assert_eq!(percentile(&h, 0.99), Some(8191));
        assert_eq!(percentile(&Log2Hist::default(), 0.5), None);
    }
}
