//! The kernel's per-program run-time accounting (`kernel.bpf_stats_enabled`), read with bpftool.

use std::{fs, process::Command};

use anyhow::Context as _;
use serde_json::Value;

use crate::cmd;

/// Turns on the kernel's per-program run-time accounting, and restores the previous setting
/// when dropped.
pub struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> anyhow::Result<Self> {
        let before = fs::read_to_string(BPF_STATS)?.trim().to_owned();
        fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(Self { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.before);
    }
}

/// A loaded BPF program's run-time accounting, from bpftool.
pub struct ProgStats {
    pub id: u64,
    /// The kernel's name: the first 15 bytes of the program's (`sb_…` for standby copies).
    name: String,
    run_ns: u64,
    runs: u64,
}

/// Every loaded BPF program's run time and count.
pub fn bpf_run_times() -> Vec<ProgStats> {
    let out = cmd::output(Command::new("bpftool").args(["prog", "show", "--json"]));
    let progs: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
    progs
        .iter()
        .filter_map(|p| {
            Some(ProgStats {
                id: p["id"].as_u64()?,
                name: p["name"].as_str().unwrap_or("?").to_owned(),
                run_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                runs: p["run_cnt"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// What the programs loaded since `at_start` spent since then, summed per name.
pub fn spent_by_name(at_start: &[ProgStats]) -> Vec<(String, u64, u64)> {
    let mut by: Vec<(String, u64, u64)> = Vec::new();
    for p in bpf_run_times() {
        let Some(p0) = at_start.iter().find(|p0| p0.id == p.id) else {
            continue;
        };
        let (ns, runs) = (p.run_ns - p0.run_ns, p.runs - p0.runs);
        match by.iter_mut().find(|(n, ..)| *n == p.name) {
            Some(e) => (e.1, e.2) = (e.1 + ns, e.2 + runs),
            None => by.push((p.name, ns, runs)),
        }
    }
    by
}
