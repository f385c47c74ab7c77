//! `cargo xtask bench`: sockbuf's overhead beside an untraced run and bpftrace, measured side
//! by side in one run, rounds alternating, medians and ratios reported.

mod floor;
mod floor_btf;
mod measure;
mod replay;
mod report;
mod stats;

use std::{fs, path::PathBuf, process::Command};

use anyhow::bail;

use self::{measure::Run, stats::BpfStats};
use crate::{cmd, setup};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// CI mode: small run, sockbuf only; checks traced sends == writes and nothing lost; no
    /// timings.
    #[arg(long)]
    pub quick: bool,
    /// Rounds; each runs every configuration once, in rotating order.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Rounds after those with the kernel's BPF run-time accounting on, for the BPF
    /// columns (their medians): one such run moved by a fifth from run to run here.
    #[arg(long, default_value_t = 3)]
    pub accounted: usize,
    /// Writes per connection.
    #[arg(long, default_value_t = 200_000)]
    pub writes: u64,
    /// Bytes per write.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Connections.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Only these configurations (with the untraced one, always): e.g. `--only
    /// floor-summary,sockbuf-summary --rounds 25` to put one comparison through many rounds.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Config>,
    /// Let the scheduler place the workload's threads (default: all on CPU 0, the tracer on
    /// the other CPUs, which makes the runs repeatable).
    #[arg(long)]
    pub spread: bool,
}

impl BenchArgs {
    /// What `cargo xtask test` runs.
    pub fn quick() -> Self {
        Self {
            quick: true,
            rounds: 1,
            accounted: 0,
            writes: 20_000,
            size: 64,
            conns: 1,
            only: Vec::new(),
            spread: false,
        }
    }
}

/// The workload's threads are named so; every tracer filters on it in the kernel.
pub const COMM: &str = "sbwork";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Config {
    Untraced,
    FloorSummary,
    /// --summary's floor, the calls' returns counted in one per-CPU slot (`floor::Work`).
    FloorCountCpu,
    /// The same, counted per socket.
    FloorCountSocket,
    /// The same, in socket-local storage from typed hooks.
    FloorCountSk,
    /// The same, doing what `--summary -c` must beyond it: the thread's id, its slot, the
    /// histogram (`floor::Work::Summary`).
    FloorCountSummary,
    FloorStream,
    SockbufStream,
    /// `--stacks`: the stacks of sleeps and EAGAINs (the workload has neither: the check's
    /// cost on every other call).
    SockbufStacks,
    /// `--stacks all`: every send call's kernel and user stack.
    SockbufStacksAll,
    /// The same on raw tracepoints, whose socket reads are probe reads: beside the default
    /// (where fentry is refused, tp_btf's direct loads), what those cost.
    SockbufStreamRaw,
    SockbufSummary,
    SockbufFull,
    /// `sockbuf top --batch`: the summary's counting, read and differenced each second.
    SockbufTop,
    BpftraceStream,
    BpftraceHist,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::FloorSummary => "floor: empty programs on --summary's hooks",
            Self::FloorCountCpu => "the same, counting calls and bytes per CPU",
            Self::FloorCountSocket => "the same, counting them per socket (a hash lookup)",
            Self::FloorCountSk => "the same, per socket in socket-local storage (tp_btf)",
            Self::FloorCountSummary => "the same, with the thread's slot and a histogram",
            Self::FloorStream => "floor: empty programs on streaming's hooks",
            Self::SockbufStream => "sockbuf trace --json (every event to a file)",
            Self::SockbufStacks => "the same, --stacks (sleeps and EAGAINs)",
            Self::SockbufStacksAll => "the same, --stacks all (every send call)",
            Self::SockbufStreamRaw => "the same, --attach tracepoint (raw: probe reads)",
            Self::SockbufSummary => "sockbuf trace --summary",
            Self::SockbufFull => "sockbuf trace --summary --full",
            Self::SockbufTop => "sockbuf top --batch (refreshed each second)",
            Self::BpftraceStream => "bpftrace printf per event (to a file)",
            Self::BpftraceHist => "bpftrace hist() in the kernel",
        }
    }
}

fn bins() -> anyhow::Result<(PathBuf, PathBuf)> {
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "trace-user", "--bin", "sockbuf"]))?;
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "xtask", "--bin", "workload"]))?;
    let dir = PathBuf::from("target/release");
    Ok((dir.join("sockbuf"), dir.join("workload")))
}

/// bpftrace (the comparison) and bpftool (per-program run times), from Debian.
fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["bpftrace", "bpftool"]
        .into_iter()
        .filter(|t| !cmd::succeeds(Command::new(t).arg("--version")))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing Debian's {} for the benchmark",
        missing.join(" and ")
    );
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

pub fn run(mut a: BenchArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the benchmark loads eBPF programs: run it as root");
    }
    if !a.quick {
        setup::run()?;
    }
    let configs: Vec<Config> = if a.quick {
        a.rounds = 1;
        a.writes = a.writes.min(20_000);
        vec![
            Config::Untraced,
            Config::SockbufStream,
            Config::SockbufSummary,
            Config::SockbufFull,
        ]
    } else {
        ensure_tools()?;
        vec![
            Config::Untraced,
            Config::FloorSummary,
            Config::FloorCountCpu,
            Config::FloorCountSocket,
            Config::FloorCountSk,
            Config::FloorCountSummary,
            Config::FloorStream,
            Config::SockbufStream,
            Config::SockbufStacks,
            Config::SockbufStacksAll,
            Config::SockbufStreamRaw,
            Config::SockbufSummary,
            Config::SockbufFull,
            Config::SockbufTop,
            Config::BpftraceStream,
            Config::BpftraceHist,
        ]
        .into_iter()
        .filter(|&c| c == Config::Untraced || a.only.is_empty() || a.only.contains(&c))
        .collect()
    };
    let (sockbuf, workload) = bins()?;
    let out_dir = PathBuf::from("target/bench");
    fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("tracer.out");
    // `round`: 1 on, timed; 0 for the accounted runs (`what` says which of those).
    let run = |c: Config, round: usize, what: &str| -> anyhow::Result<Run> {
        let mut r = measure::run_once(c, &a, &sockbuf, &workload, &out)?;
        eprintln!(
            "xtask: {what} {:<45} {:>8.0} ns/write",
            c.name(),
            r.ns_per_write
        );
        r.round = round;
        Ok(r)
    };
    // The timed rounds run with the kernel's run-time accounting off: it adds two clock reads
    // to every program run, which would weigh on sockbuf's many short programs more than on
    // bpftrace's one.
    let mut runs = Vec::new();
    for round in 0..a.rounds {
        // Rotate the order so no configuration always runs right after the same other one.
        for i in 0..configs.len() {
            runs.push(run(
                configs[(i + round) % configs.len()],
                round + 1,
                &format!("round {}", round + 1),
            )?);
        }
    }
    if a.quick {
        return check_quick(&runs);
    }
    // Then the traced configurations again with the accounting on, for the kernel time.
    let accounted = {
        let _stats = BpfStats::enable()?;
        let traced: Vec<Config> = configs
            .iter()
            .copied()
            .filter(|&c| c != Config::Untraced)
            .collect();
        let mut v = Vec::new();
        for round in 0..a.accounted.max(1) {
            for i in 0..traced.len() {
                let c = traced[(i + round) % traced.len()];
                v.push(run(c, 0, &format!("accounted {}", round + 1))?);
            }
        }
        v
    };
    let mut table = report::report(&configs, &runs, &accounted, &a);
    table.push_str(&replay::table(&replay::run(
        &a, &sockbuf, &workload, &out_dir,
    )?));
    println!("{table}");
    fs::write(out_dir.join("last.md"), &table)?;
    eprintln!("xtask: table written to target/bench/last.md");
    Ok(())
}

/// `--quick`: every write arrived as a send event (streaming) or was counted (summary), and
/// nothing was lost.
fn check_quick(runs: &[Run]) -> anyhow::Result<()> {
    for r in runs.iter().filter(|r| r.config != Config::Untraced) {
        let (events, lost) = (r.events.unwrap_or(0), r.lost.unwrap_or(u64::MAX));
        println!(
            "bench --quick: {}: {} writes, {events} sends traced, {lost} lost",
            r.config.name(),
            r.writes
        );
        if events != r.writes || lost != 0 {
            bail!(
                "{} missed writes: {events} of {} traced, {lost} lost",
                r.config.name(),
                r.writes
            );
        }
    }
    Ok(())
}
