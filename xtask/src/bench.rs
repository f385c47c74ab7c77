//! `cargo xtask bench`: sockbuf's overhead beside an untraced run and bpftrace, measured side
//! by side in one run, rounds alternating, medians and ratios reported.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{cmd, setup};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// CI mode: small run, sockbuf only; checks events == writes and nothing lost; no timings.
    #[arg(long)]
    quick: bool,
    /// Rounds; each runs every configuration once, in rotating order.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Writes per connection.
    #[arg(long, default_value_t = 200_000)]
    writes: u64,
    /// Bytes per write.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Connections.
    #[arg(long, default_value_t = 1)]
    conns: usize,
}

impl BenchArgs {
    /// What `cargo xtask test` runs.
    pub fn quick() -> Self {
        Self {
            quick: true,
            rounds: 1,
            writes: 20_000,
            size: 64,
            conns: 1,
        }
    }
}

/// The workload's threads are named so; every tracer filters on it in the kernel.
const COMM: &str = "sbwork";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    Untraced,
    SockbufStream,
    SockbufSummary,
    BpftraceStream,
    BpftraceHist,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::SockbufStream => "sockbuf trace --json (every event to a file)",
            Self::SockbufSummary => "sockbuf trace --summary",
            Self::BpftraceStream => "bpftrace printf per event (to a file)",
            Self::BpftraceHist => "bpftrace hist() in the kernel",
        }
    }
}

/// One measured run.
struct Run {
    config: Config,
    ns_per_write: f64,
    writes: u64,
    elapsed_s: f64,
    /// Events the tracer delivered (None: it only aggregates).
    events: Option<u64>,
    lost: Option<u64>,
    cpu_ms: f64,
    rss_kib: u64,
    /// The workload's own CPU time (its syscalls, and the probes that run inside them).
    workload_cpu_ms: f64,
    /// Time the kernel spent in the tracer's BPF programs (kernel.bpf_stats_enabled).
    bpf_ns: u64,
    /// The same per program name: (name, ns, runs) during the workload.
    by_program: Vec<(String, u64, u64)>,
}

/// Turns on the kernel's per-program run-time accounting for the bench, and restores the
/// previous setting when dropped.
struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
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
struct ProgStats {
    id: u64,
    /// The kernel's name: the first 15 bytes of the program's (`sb_…` for standby copies).
    name: String,
    run_ns: u64,
    runs: u64,
}

/// Every loaded BPF program's run time and count.
fn bpf_run_times() -> Vec<ProgStats> {
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
fn spent_by_name(at_start: &[ProgStats]) -> Vec<(String, u64, u64)> {
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

fn bins() -> anyhow::Result<(PathBuf, PathBuf)> {
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "trace-user", "--bin", "sockbuf"]))?;
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "xtask", "--bin", "workload"]))?;
    let dir = PathBuf::from("target/release");
    Ok((dir.join("sockbuf"), dir.join("workload")))
}

/// Starts the tracer for `config`, writing to `out`, and waits until it is attached.
fn start_tracer(config: Config, sockbuf: &Path, out: &Path) -> anyhow::Result<Option<Child>> {
    let file = || fs::File::create(out);
    let child = match config {
        Config::Untraced => return Ok(None),
        Config::SockbufStream | Config::SockbufSummary => {
            let mut c = Command::new(sockbuf);
            c.args(["trace", "--json", "-c", COMM]);
            if config == Config::SockbufSummary {
                c.arg("--summary");
            }
            c.stdout(file()?).stderr(Stdio::null()).spawn()?
        }
        Config::BpftraceStream | Config::BpftraceHist => {
            let action = if config == Config::BpftraceStream {
                r#"printf("%d %d\n", tid, args->ret);"#
            } else {
                "@bytes = hist(args->ret);"
            };
            let prog =
                format!(r#"tracepoint:sock:sock_send_length /comm == "{COMM}"/ {{ {action} }}"#);
            Command::new("bpftrace")
                .args(["-e", &prog])
                .stdout(file()?)
                .stderr(Stdio::null())
                .spawn()?
        }
    };
    // Both print a first line once attached: sockbuf its start object, bpftrace "Attaching…".
    let t0 = Instant::now();
    while fs::metadata(out).map(|m| m.len()).unwrap_or(0) == 0 {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("{} did not start within 60 s", config.name());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(child))
}

/// CPU time (ms) and peak RSS (KiB) of a running process, from /proc.
fn usage(pid: u32) -> (f64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the comm: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (ticks * 1000.0 / hz, hwm)
}

fn run_once(
    config: Config,
    a: &BenchArgs,
    sockbuf: &Path,
    workload: &Path,
    out: &Path,
) -> anyhow::Result<Run> {
    let before: Vec<u64> = bpf_run_times().into_iter().map(|p| p.id).collect();
    let tracer = start_tracer(config, sockbuf, out)?;
    // Programs this tracer loaded, and their run time before the workload starts.
    let at_start: Vec<ProgStats> = bpf_run_times()
        .into_iter()
        .filter(|p| !before.contains(&p.id))
        .collect();
    // The tracer's CPU from here on: its start-up (BTF parsing, loading) is not overhead.
    let cpu_at_start = tracer.as_ref().map_or(0.0, |c| usage(c.id()).0);
    let w = Command::new(workload)
        .args([
            "-n",
            &a.writes.to_string(),
            "-s",
            &a.size.to_string(),
            "-c",
            &a.conns.to_string(),
        ])
        .output()
        .context("running the workload")?;
    if !w.status.success() {
        bail!("workload failed: {}", String::from_utf8_lossy(&w.stderr));
    }
    let wj: Value = serde_json::from_slice(&w.stdout)?;
    let mut run = Run {
        config,
        ns_per_write: wj["ns_per_write"].as_f64().unwrap_or(0.0),
        writes: wj["writes"].as_u64().unwrap_or(0),
        elapsed_s: wj["elapsed_ns"].as_f64().unwrap_or(0.0) / 1e9,
        events: None,
        lost: None,
        cpu_ms: 0.0,
        rss_kib: 0,
        workload_cpu_ms: wj["cpu_ns"].as_f64().unwrap_or(0.0) / 1e6,
        bpf_ns: 0,
        by_program: spent_by_name(&at_start),
    };
    run.bpf_ns = run.by_program.iter().map(|(_, ns, _)| ns).sum();
    if let Some(mut child) = tracer {
        // Let the last events and ACKs arrive before stopping.
        thread::sleep(Duration::from_millis(300));
        (run.cpu_ms, run.rss_kib) = usage(child.id());
        run.cpu_ms -= cpu_at_start;
        stop(&mut child)?;
        let text = fs::read_to_string(out)?;
        match config {
            Config::SockbufStream | Config::SockbufSummary => {
                let end: Value = text
                    .lines()
                    .last()
                    .map(serde_json::from_str)
                    .transpose()?
                    .unwrap_or_default();
                run.events = Some(end["sends"].as_u64().unwrap_or(0));
                run.lost = end["lost"].as_u64();
            }
            Config::BpftraceStream => {
                let lines = text
                    .lines()
                    .filter(|l| l.split(' ').count() == 2 && !l.starts_with("Attaching"))
                    .count() as u64;
                run.events = Some(lines);
                run.lost = Some(run.writes.saturating_sub(lines));
            }
            _ => {}
        }
    }
    Ok(run)
}

/// SIGINT, as Ctrl-C; again if ignored (bpftrace can miss one), then SIGKILL.
fn stop(child: &mut Child) -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGINT, libc::SIGKILL] {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    child.wait()?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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
        vec![Config::Untraced, Config::SockbufStream]
    } else {
        ensure_tools()?;
        vec![
            Config::Untraced,
            Config::SockbufStream,
            Config::SockbufSummary,
            Config::BpftraceStream,
            Config::BpftraceHist,
        ]
    };
    let (sockbuf, workload) = bins()?;
    let _stats = if a.quick {
        None
    } else {
        Some(BpfStats::enable()?)
    };
    let out_dir = PathBuf::from("target/bench");
    fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("tracer.out");
    let mut runs = Vec::new();
    for round in 0..a.rounds {
        // Rotate the order so no configuration always runs right after the same other one.
        for i in 0..configs.len() {
            let c = configs[(i + round) % configs.len()];
            let r = run_once(c, &a, &sockbuf, &workload, &out)?;
            eprintln!(
                "xtask: round {} {:<45} {:>8.0} ns/write",
                round + 1,
                c.name(),
                r.ns_per_write
            );
            runs.push(r);
        }
    }
    if a.quick {
        for r in runs.iter().filter(|r| r.config == Config::SockbufStream) {
            let (events, lost) = (r.events.unwrap_or(0), r.lost.unwrap_or(u64::MAX));
            println!(
                "bench --quick: {} writes, {events} send events, {lost} lost",
                r.writes
            );
            if events != r.writes || lost != 0 {
                bail!(
                    "sockbuf missed events: {events} of {} writes, {lost} lost",
                    r.writes
                );
            }
        }
        return Ok(());
    }
    let table = report(&configs, &runs, &a);
    println!("{table}");
    fs::write(out_dir.join("last.md"), &table)?;
    eprintln!("xtask: table written to target/bench/last.md");
    Ok(())
}

fn report(configs: &[Config], runs: &[Run], a: &BenchArgs) -> String {
    let of = |c: Config| runs.iter().filter(move |r| r.config == c);
    let base = median(of(Config::Untraced).map(|r| r.ns_per_write).collect());
    let cpu_per_write = |r: &Run| (r.workload_cpu_ms + r.cpu_ms) * 1e6 / r.writes as f64;
    let cpu_base = median(of(Config::Untraced).map(cpu_per_write).collect());
    let mut t = format!(
        "{} rounds of {} writes of {} B on {} connection(s); medians.\n\n\
         | configuration | ns/write | vs untraced | added | CPU ns/write (workload + tracer) | CPU vs untraced | events/s | events | lost | tracer CPU ms (during the run) | tracer peak RSS MiB | BPF ns/write (in the kernel) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        a.rounds,
        a.writes * a.conns as u64,
        a.size,
        a.conns
    );
    for &c in configs {
        let ns = median(of(c).map(|r| r.ns_per_write).collect());
        let opt = |f: fn(&Run) -> Option<u64>| {
            let v: Vec<f64> = of(c).filter_map(f).map(|x| x as f64).collect();
            if v.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.0}", median(v))
            }
        };
        let cpu = median(of(c).map(cpu_per_write).collect());
        let eps = median(
            of(c)
                .filter_map(|r| r.events.map(|e| e as f64 / r.elapsed_s))
                .collect(),
        );
        t.push_str(&format!(
            "| {} | {ns:.0} | {:.2}× | {:+.1} % | {cpu:.0} | {:.2}× | {} | {} | {} | {:.0} | {:.1} | {:.0} |\n",
            c.name(),
            ns / base,
            (ns / base - 1.0) * 100.0,
            cpu / cpu_base,
            if c == Config::Untraced || eps == 0.0 { "-".to_owned() } else { format!("{eps:.0}") },
            opt(|r| r.events),
            opt(|r| r.lost),
            median(of(c).map(|r| r.cpu_ms).collect()),
            median(of(c).map(|r| r.rss_kib as f64).collect()) / 1024.0,
            median(of(c).map(|r| r.bpf_ns as f64 / r.writes as f64).collect()),
        ));
    }
    t.push_str(&by_program(runs, a));
    t
}

/// Where sockbuf's kernel time per write goes when it streams: per program (kernel names,
/// `sb_…` the standby copies), medians over the rounds.
fn by_program(runs: &[Run], a: &BenchArgs) -> String {
    let stream: Vec<&Run> = runs
        .iter()
        .filter(|r| r.config == Config::SockbufStream)
        .collect();
    let mut names: Vec<&str> = stream
        .iter()
        .flat_map(|r| r.by_program.iter().map(|(n, ..)| n.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let per_write = |name: &str, f: fn(u64, u64) -> f64| {
        median(
            stream
                .iter()
                .filter_map(|r| {
                    let (_, ns, runs) = r.by_program.iter().find(|(n, ..)| n == name)?;
                    Some(f(*ns, *runs) / r.writes as f64)
                })
                .collect(),
        )
    };
    let mut rows: Vec<(f64, String)> = names
        .into_iter()
        .map(|n| {
            let ns = per_write(n, |ns, _| ns as f64);
            let runs = per_write(n, |_, runs| runs as f64);
            let per_run = if runs > 0.0 { ns / runs } else { 0.0 };
            (
                ns,
                format!("| {n} | {runs:.2} | {per_run:.0} | {ns:.0} |\n"),
            )
        })
        .collect();
    rows.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut t = format!(
        "\nsockbuf trace --json, kernel time by program (kernel names, cut at 15 bytes; `sb_…`: standby copies; {} B writes):\n\n\
         | program | runs per write | ns per run | ns per write |\n| --- | ---: | ---: | ---: |\n",
        a.size
    );
    for (_, row) in rows {
        t.push_str(&row);
    }
    t
}
