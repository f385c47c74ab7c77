//! The exported metrics (OpenMetrics, `prometheus-client`): counters per label set fed with
//! what each refresh added, the largest queues per label set at the last refresh, and
//! sockbuf's own health.

use std::{collections::HashMap, sync::atomic::AtomicU64};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Metric, Registry, Unit},
};

use super::{histogram::Log2Family, labels::Labels};
use crate::summary::Counts;

/// A label set with one more label (the error's name).
type Named = Vec<(&'static str, String)>;

#[derive(Default)]
pub struct Metrics {
    send_calls: Family<Labels, Counter>,
    send_bytes: Family<Labels, Counter>,
    send_eagain: Family<Labels, Counter>,
    send_errors: Family<Named, Counter>,
    asleep: Family<Labels, Counter<f64, AtomicU64>>,
    recv_calls: Family<Labels, Counter>,
    recv_bytes: Family<Labels, Counter>,
    rst_sent: Family<Labels, Counter>,
    rst_received: Family<Labels, Counter>,
    dropped_unread: Family<Labels, Counter>,
    ack_seconds: Log2Family,
    asleep_seconds: Log2Family,
    send_q_max: Family<Labels, Gauge>,
    recv_q_max: Family<Labels, Gauge>,
    lost: Counter,
    faults: Counter,
    missed: Counter,
    overflow: Counter,
    programs: Gauge,
    bpf_seconds: Counter<f64, AtomicU64>,
    bpf_runs: Counter,
}

/// Registers each `name, unit, metric, help;` line's metric (a clone: the registry and
/// [`Metrics`] share it) in `$r`.
macro_rules! register {
    ($r:expr, $($name:literal, $unit:expr, $metric:expr, $help:literal;)*) => {
        $(reg($r, $name, $help, $unit.clone(), $metric.clone());)*
    };
}

/// Registers `metric` in `r` as `name` (with `unit`: a counter's name gets the unit, then
/// `_total`).
fn reg(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, metric: impl Metric) {
    match unit {
        Some(u) => r.register_with_unit(name, help, u, metric),
        None => r.register(name, help, metric),
    }
}

/// sockbuf's own figures, as the kernel and the loader count them (totals since the start).
pub struct Health {
    pub lost: u64,
    pub faults: u64,
    pub missed: u64,
    pub overflowed: u64,
    pub programs: i64,
    pub bpf_run_ns: u64,
    pub bpf_runs: u64,
}

impl Metrics {
    /// The metrics, registered in `r` under the `sockbuf_` prefix.
    pub fn register(r: &mut Registry) -> Self {
        let m = Metrics::default();
        let r = r.sub_registry_with_prefix("sockbuf");
        let (bytes, secs) = (Some(Unit::Bytes), Some(Unit::Seconds));
        // One line a metric: name, unit, metric, help.
        register! { r,
            "send_calls", None, m.send_calls, "Send calls that copied bytes or got EAGAIN";
            "send", bytes, m.send_bytes, "Bytes send calls copied into send buffers";
            "send_eagain", None, m.send_eagain, "Send calls that got EAGAIN";
            "send_errors", None, m.send_errors, "Send calls that failed otherwise, by error";
            "send_asleep", secs, m.asleep,
                "Time writers slept on a full send buffer (with --full)";
            "recv_calls", None, m.recv_calls, "Receive calls that returned bytes, 0 or EAGAIN";
            "recv", bytes, m.recv_bytes, "Bytes receive calls copied out of receive buffers";
            "rst_sent", None, m.rst_sent, "RSTs sent";
            "rst_received", None, m.rst_received, "RSTs received";
            "dropped_unread", bytes, m.dropped_unread, "Received bytes a close threw away unread";
            "write_ack", secs, m.ack_seconds,
                "From a write's call to the ACK of its last byte (with --full; _sum estimated \
                 from the log2 buckets the kernel keeps)";
            "sleep", secs, m.asleep_seconds, "Each sleep on a full send buffer (with --full)";
            "send_queue_max", bytes, m.send_q_max,
                "The largest Send-Q (bytes not yet acked) of the group's sockets at the last \
                 refresh";
            "recv_queue_max", bytes, m.recv_q_max,
                "The largest Recv-Q (bytes not yet read) of the group's sockets at the last \
                 refresh";
            "lost_events", None, m.lost, "Events lost: the ring buffer was full";
            "faults", None, m.faults, "Events abandoned: a failed kernel read or a full map";
            "missed_runs", None, m.missed, "Program runs the kernel skipped";
            "series_overflow", None, m.overflow,
                "Sockets counted under the (other) label set: --max-series sets existed";
            "programs_loaded", None, m.programs, "eBPF programs sockbuf has loaded";
            "bpf_run", secs, m.bpf_seconds,
                "Time sockbuf's programs ran in the kernel (counted while the kernel's BPF \
                 statistics are on: --bpf-stats)";
            "bpf_runs", None, m.bpf_runs, "Runs of sockbuf's programs (as bpf_run)";
        }
        m
    }

    /// Adds what socket counts `d` gained since the last refresh to `labels`' counters.
    pub fn add(&self, labels: &Labels, d: &Counts) {
        let add = |f: &Family<Labels, Counter>, v: u64| {
            if v > 0 {
                f.get_or_create(labels).inc_by(v);
            }
        };
        add(&self.send_calls, d.sends);
        add(&self.send_bytes, d.copied_bytes);
        add(&self.send_eagain, d.eagain);
        add(&self.recv_calls, d.recvs);
        add(&self.recv_bytes, d.received_bytes);
        add(&self.rst_sent, d.rst_sent);
        add(&self.rst_received, d.rst_received);
        add(&self.dropped_unread, d.dropped_unread_bytes);
        if d.blocked_ns > 0 {
            self.asleep
                .get_or_create(labels)
                .inc_by(d.blocked_ns as f64 / 1e9);
        }
        self.ack_seconds.add(labels, &d.ack_us, None);
        self.asleep_seconds
            .add(labels, &d.block_us, Some(d.blocked_ns as f64 / 1e9));
        for (error, &n) in &d.errors {
            let mut named = labels.clone();
            named.push(("error", error.clone()));
            self.send_errors.get_or_create(&named).inc_by(n);
        }
    }

    /// The largest queues per label set at this refresh (label sets without a socket now
    /// are dropped: a gauge of a group that is gone would stay at its last value).
    pub fn queues(&self, max: &HashMap<Labels, (u32, u32)>) {
        self.send_q_max.clear();
        self.recv_q_max.clear();
        for (labels, &(send_q, recv_q)) in max {
            self.send_q_max.get_or_create(labels).set(i64::from(send_q));
            self.recv_q_max.get_or_create(labels).set(i64::from(recv_q));
        }
    }

    pub fn health(&self, h: &Health) {
        let to = |c: &Counter, v: u64| {
            let now = c.get();
            if v > now {
                c.inc_by(v - now);
            }
        };
        to(&self.lost, h.lost);
        to(&self.faults, h.faults);
        to(&self.missed, h.missed);
        to(&self.overflow, h.overflowed);
        to(&self.bpf_runs, h.bpf_runs);
        self.programs.set(h.programs);
        let secs = h.bpf_run_ns as f64 / 1e9;
        let now = self.bpf_seconds.get();
        if secs > now {
            self.bpf_seconds.inc_by(secs - now);
        }
    }
}
