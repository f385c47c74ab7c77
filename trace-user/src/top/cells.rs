//! `top`'s columns as text, shared by the screen and `--batch`.

use super::{Row, SortBy, Totals};

/// A column: its header, width, and which sort key it is (if any).
pub struct Column {
    pub title: &'static str,
    pub width: u16,
    pub sort: Option<SortBy>,
    cell: fn(&Row) -> String,
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

fn us(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), human_us)
}

/// An address as the column shows it: an IPv4-mapped IPv6 address (a dual-stack server's
/// IPv4 peers) as the IPv4 address it is, to fit.
fn addr(a: &str) -> String {
    a.strip_prefix("::ffff:").unwrap_or(a).to_owned()
}

/// A rate or size in 1024-based units, as `top` shows memory: 950, 12.3K, 4.0M.
pub fn human(v: f64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if v < 1000.0 {
        return format!("{v:.0}");
    }
    let mut v = v / 1024.0;
    for u in UNITS {
        if v < 1000.0 {
            return format!("{v:.1}{u}");
        }
        v /= 1024.0;
    }
    format!("{v:.0}P")
}

/// Microseconds as µs, ms or s.
fn human_us(v: u64) -> String {
    match v {
        0..1_000 => format!("{v}us"),
        1_000..1_000_000 => format!("{:.1}ms", v as f64 / 1e3),
        _ => format!("{:.1}s", v as f64 / 1e6),
    }
}

pub const COLUMNS: &[Column] = &[
    col("PID", 7, Some(SortBy::Pid), |r| r.pid.to_string()),
    col("COMM", 15, None, |r| r.comm.clone()),
    col("LOCAL", 21, None, |r| addr(&r.laddr)),
    col("REMOTE", 21, None, |r| addr(&r.raddr)),
    col("STATE", 11, None, |r| r.state.to_owned()),
    col("SEND-Q", 8, Some(SortBy::SendQ), |r| opt(r.send_q)),
    col("UNSENT", 8, Some(SortBy::Unsent), |r| opt(r.unsent)),
    col("INFLIGHT", 8, Some(SortBy::InFlight), |r| opt(r.in_flight)),
    col("RECV-Q", 8, Some(SortBy::RecvQ), |r| opt(r.recv_q)),
    col("SNDBUF", 8, Some(SortBy::Sndbuf), |r| opt(r.sndbuf)),
    col("USE%", 4, Some(SortBy::Use), |r| pct(r.sndbuf_used_pct)),
    col("SEND/s", 7, Some(SortBy::Send), |r| {
        human(r.send_bytes_per_s)
    }),
    col("RECV/s", 7, Some(SortBy::Recv), |r| {
        human(r.recv_bytes_per_s)
    }),
    col("CALLS/s", 7, Some(SortBy::Calls), |r| human(r.sends_per_s)),
    col("EAGAIN/s", 8, Some(SortBy::Eagain), |r| {
        human(r.eagain_per_s)
    }),
    col("ASLEEP%", 7, Some(SortBy::Asleep), |r| pct(r.asleep_pct)),
    col("ACK-P50", 7, Some(SortBy::Ack50), |r| us(r.ack_p50_us)),
    col("ACK-P99", 7, Some(SortBy::Ack), |r| us(r.ack_p99_us)),
    col("RST", 4, Some(SortBy::Rst), |r| r.rsts.to_string()),
];

const fn col(
    title: &'static str,
    width: u16,
    sort: Option<SortBy>,
    cell: fn(&Row) -> String,
) -> Column {
    Column {
        title,
        width,
        sort,
        cell,
    }
}

impl Column {
    pub fn cell(&self, r: &Row) -> String {
        (self.cell)(r)
    }

    /// Text columns are left-aligned, figures right-aligned.
    pub fn left(&self) -> bool {
        matches!(self.title, "COMM" | "LOCAL" | "REMOTE" | "STATE")
    }
}

/// One line of `cells`, each padded to its column.
pub fn line(cells: impl Iterator<Item = (String, &'static Column)>) -> String {
    let mut s = String::new();
    for (text, c) in cells {
        let w = usize::from(c.width);
        let text: String = text.chars().take(w).collect();
        if !s.is_empty() {
            s.push(' ');
        }
        if c.left() {
            s.push_str(&format!("{text:<w$}"));
        } else {
            s.push_str(&format!("{text:>w$}"));
        }
    }
    s.trim_end().to_owned()
}

/// The header line.
pub fn header() -> String {
    line(COLUMNS.iter().map(|c| (c.title.to_owned(), c)))
}

/// A row's line.
pub fn row(r: &Row) -> String {
    line(COLUMNS.iter().map(|c| (c.cell(r), c)))
}

/// The totals line: the rates summed over every socket.
pub fn totals(t: &Totals) -> String {
    format!(
        "total: {} sockets, send {}B/s, recv {}B/s, {} calls/s, {} EAGAIN/s, {} RSTs",
        t.sockets,
        human(t.send_bytes_per_s),
        human(t.recv_bytes_per_s),
        human(t.sends_per_s),
        human(t.eagain_per_s),
        t.rsts
    )
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn human_units() {
        assert_eq!(human(950.0), "950");
        assert_eq!(human(12_595.2), "12.3K");
        assert_eq!(human(4.0 * 1024.0 * 1024.0), "4.0M");
    }
}
