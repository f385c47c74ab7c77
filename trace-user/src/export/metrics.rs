//! The exported metrics (OpenMetrics, `prometheus-client`): counters per label set fed with
//! what each refresh added, the largest queues per label set at the last refresh, and
//! sockbuf's own health.

use std::{collections::HashMap, sync::atomic::AtomicU64};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::{histogram::Log2Family, labels::Labels};
use crate::summary::Counts;

/// A label set with one more label (the error's name).
type Named = Vec<(&'static str, String)>;

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
        let m = Metrics {
            send_calls: Family::default(),
            send_bytes: Family::default(),
            send_eagain: Family::default(),
            send_errors: Family::default(),
            asleep: Family::default(),
            recv_calls: Family::default(),
            recv_bytes: Family::default(),
            rst_sent: Family::default(),
            rst_received: Family::default(),
            dropped_unread: Family::default(),
            ack_seconds: Log2Family::default(),
            asleep_seconds: Log2Family::default(),
            send_q_max: Family::default(),
            recv_q_max: Family::default(),
            lost: Counter::default(),
            faults: Counter::default(),
            missed: Counter::default(),
            overflow: Counter::default(),
            programs: Gauge::default(),
            bpf_seconds: Counter::default(),
            bpf_runs: Counter::default(),
        };
        let r = r.sub_registry_with_prefix("sockbuf");
        r.register(
            "send_calls",
            "Send calls that copied bytes or got EAGAIN",
            m.send_calls.clone(),
        );
        r.register_with_unit(
            "send",
            "Bytes send calls copied into send buffers",
            Unit::Bytes,
            m.send_bytes.clone(),
        );
        r.register(
            "send_eagain",
            "Send calls that got EAGAIN",
            m.send_eagain.clone(),
        );
        r.register(
            "send_errors",
            "Send calls that failed otherwise, by error",
            m.send_errors.clone(),
        );
        r.register_with_unit(
            "send_asleep",
            "Time writers slept on a full send buffer (with --full)",
            Unit::Seconds,
            m.asleep.clone(),
        );
        r.register(
            "recv_calls",
            "Receive calls that returned bytes, 0 or EAGAIN",
            m.recv_calls.clone(),
        );
        r.register_with_unit(
            "recv",
            "Bytes receive calls copied out of receive buffers",
            Unit::Bytes,
            m.recv_bytes.clone(),
        );
        r.register("rst_sent", "RSTs sent", m.rst_sent.clone());
        r.register("rst_received", "RSTs received", m.rst_received.clone());
        r.register_with_unit(
            "dropped_unread",
            "Received bytes a close threw away unread",
            Unit::Bytes,
            m.dropped_unread.clone(),
        );
        r.register_with_unit(
            "write_ack",
            "From a write's call to the ACK of its last byte (with --full; _sum estimated from the log2 buckets the kernel keeps)",
            Unit::Seconds,
            m.ack_seconds.clone(),
        );
        r.register_with_unit(
            "sleep",
            "Each sleep on a full send buffer (with --full)",
            Unit::Seconds,
            m.asleep_seconds.clone(),
        );
        r.register_with_unit(
            "send_queue_max",
            "The largest Send-Q (bytes not yet acked) of the group's sockets at the last refresh",
            Unit::Bytes,
            m.send_q_max.clone(),
        );
        r.register_with_unit(
            "recv_queue_max",
            "The largest Recv-Q (bytes not yet read) of the group's sockets at the last refresh",
            Unit::Bytes,
            m.recv_q_max.clone(),
        );
        r.register(
            "lost_events",
            "Events lost: the ring buffer was full",
            m.lost.clone(),
        );
        r.register(
            "faults",
            "Events abandoned: a failed kernel read or a full map",
            m.faults.clone(),
        );
        r.register(
            "missed_runs",
            "Program runs the kernel skipped",
            m.missed.clone(),
        );
        r.register(
            "series_overflow",
            "Sockets counted under the (other) label set: --max-series sets existed",
            m.overflow.clone(),
        );
        r.register(
            "programs_loaded",
            "eBPF programs sockbuf has loaded",
            m.programs.clone(),
        );
        r.register_with_unit(
            "bpf_run",
            "Time sockbuf's programs ran in the kernel (counted while the kernel's BPF statistics are on: --bpf-stats)",
            Unit::Seconds,
            m.bpf_seconds.clone(),
        );
        r.register(
            "bpf_runs",
            "Runs of sockbuf's programs (as bpf_run)",
            m.bpf_runs.clone(),
        );
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
