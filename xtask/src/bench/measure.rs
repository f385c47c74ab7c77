//! One measured run: a tracer started, the workload run under it, the tracer stopped.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};
use serde_json::Value;

use super::{
    BenchArgs, COMM, Config,
    floor::{self, Work},
    stats::{ProgStats, bpf_run_times, spent_by_name},
};

/// One measured run.
pub struct Run {
    pub config: Config,
    /// The timed round it ran in (0 for the accounted runs).
    pub round: usize,
    pub ns_per_write: f64,
    pub writes: u64,
    pub elapsed_s: f64,
    /// Sends the tracer traced: events delivered, or counted in the kernel (`--summary`).
    pub events: Option<u64>,
    pub lost: Option<u64>,
    pub cpu_ms: f64,
    pub rss_kib: u64,
    /// The workload's own CPU time (its syscalls, and the probes that run inside them).
    pub workload_cpu_ms: f64,
    /// Time the kernel spent in the tracer's BPF programs (kernel.bpf_stats_enabled; 0 when
    /// the accounting is off).
    pub bpf_ns: u64,
    /// The same per program name: (name, ns, runs) during the workload.
    pub by_program: Vec<(String, u64, u64)>,
}

/// What traces a run: nothing, a tracer process, or the floor's programs in this one.
enum Tracer {
    None,
    Process(Child),
    /// Attached while held.
    Floor(aya::Ebpf),
}

impl Tracer {
    fn process(&self) -> Option<&Child> {
        match self {
            Self::Process(c) => Some(c),
            _ => None,
        }
    }
}

/// The workload's CPU, unless `--spread` (or there is only one).
fn workload_cpu(a: &BenchArgs) -> Option<usize> {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    (!a.spread && cpus > 1).then_some(0)
}

/// Keeps a tracer process off the workload's CPU: its own work is not the workload's.
fn off_cpu(c: &mut Command, workload: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    for cpu in (0..cpus).filter(|&cpu| cpu != workload) {
        set.set(cpu)?;
    }
    // SAFETY: the closure only makes the sched_setaffinity system call.
    unsafe {
        c.pre_exec(move || Ok(sched_setaffinity(Pid::from_raw(0), &set)?));
    }
    Ok(())
}

/// Starts the tracer for `config`, writing to `out`, and waits until it is attached.
fn start_tracer(
    config: Config,
    a: &BenchArgs,
    sockbuf: &Path,
    out: &Path,
) -> anyhow::Result<Tracer> {
    let file = || fs::File::create(out);
    let mut c = match config {
        Config::Untraced => return Ok(Tracer::None),
        Config::FloorSummary
        | Config::FloorCountCpu
        | Config::FloorCountSocket
        | Config::FloorCountSk
        | Config::FloorCountSummary => {
            let work = match config {
                Config::FloorCountCpu => Work::PerCpu,
                Config::FloorCountSocket => Work::PerSocket,
                Config::FloorCountSk => Work::SkStorage,
                Config::FloorCountSummary => Work::Summary,
                _ => Work::None,
            };
            return Ok(Tracer::Floor(floor::attach(floor::SUMMARY_HOOKS, work)?));
        }
        Config::FloorStream => {
            return Ok(Tracer::Floor(floor::attach(
                floor::STREAM_HOOKS,
                Work::None,
            )?));
        }
        Config::SockbufStream
        | Config::SockbufStacks
        | Config::SockbufStacksAll
        | Config::SockbufStreamRaw
        | Config::SockbufSummary
        | Config::SockbufFull => {
            let mut c = Command::new(sockbuf);
            c.args(["trace", "--json", "-c", COMM]);
            match config {
                Config::SockbufStacks => c.arg("--stacks"),
                Config::SockbufStacksAll => c.args(["--stacks", "all"]),
                Config::SockbufStreamRaw => c.args(["--attach", "tracepoint"]),
                Config::SockbufSummary => c.arg("--summary"),
                Config::SockbufFull => c.args(["--summary", "--full"]),
                _ => &mut c,
            };
            c
        }
        Config::SockbufTop => {
            let mut c = Command::new(sockbuf);
            c.args(["top", "--batch", "--json", "-c", COMM]);
            c
        }
        Config::BpftraceStream | Config::BpftraceHist => {
            let action = if config == Config::BpftraceStream {
                r#"printf("%d %d\n", tid, args->ret);"#
            } else {
                "@bytes = hist(args->ret);"
            };
            let prog =
                format!(r#"tracepoint:sock:sock_send_length /comm == "{COMM}"/ {{ {action} }}"#);
            let mut c = Command::new("bpftrace");
            c.args(["-e", &prog]);
            c
        }
    };
    if let Some(cpu) = workload_cpu(a) {
        off_cpu(&mut c, cpu)?;
    }
    let child = c.stdout(file()?).stderr(Stdio::null()).spawn()?;
    // Both print a first line once attached: sockbuf its start object, bpftrace "Attaching…".
    let t0 = Instant::now();
    while fs::metadata(out).map(|m| m.len()).unwrap_or(0) == 0 {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("{} did not start within 60 s", config.name());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(Tracer::Process(child))
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

pub fn run_once(
    config: Config,
    a: &BenchArgs,
    sockbuf: &Path,
    workload: &Path,
    out: &Path,
) -> anyhow::Result<Run> {
    let before: Vec<u64> = bpf_run_times().into_iter().map(|p| p.id).collect();
    let tracer = start_tracer(config, a, sockbuf, out)?;
    // Programs this tracer loaded, and their run time before the workload starts. bpftrace
    // says "Attaching…" before it loads its program: wait until one is there.
    let loaded = || -> Vec<ProgStats> {
        bpf_run_times()
            .into_iter()
            .filter(|p| !before.contains(&p.id))
            .collect()
    };
    let mut at_start = loaded();
    let t0 = Instant::now();
    while !matches!(tracer, Tracer::None)
        && at_start.is_empty()
        && t0.elapsed() < Duration::from_secs(10)
    {
        thread::sleep(Duration::from_millis(50));
        at_start = loaded();
    }
    // The tracer's CPU from here on: its start-up (BTF parsing, loading) is not overhead.
    let cpu_at_start = tracer.process().map_or(0.0, |c| usage(c.id()).0);
    let w = workload_command(workload, a)
        .output()
        .context("running the workload")?;
    if !w.status.success() {
        bail!("workload failed: {}", String::from_utf8_lossy(&w.stderr));
    }
    let wj: Value = serde_json::from_slice(&w.stdout)?;
    let mut run = Run {
        config,
        round: 0,
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
    if let Tracer::Floor(mut ebpf) = tracer {
        // Each write is a send call (a socket's first only makes its entry), and its reader's
        // calls count too.
        if let Some(n) = floor::counted(&mut ebpf)?
            && n + (a.conns as u64) < run.writes
        {
            bail!(
                "{}: counted {n} calls for {} writes",
                config.name(),
                run.writes
            );
        }
        return Ok(run);
    }
    if let Tracer::Process(mut child) = tracer {
        // Let the last events and ACKs arrive before stopping.
        thread::sleep(Duration::from_millis(300));
        (run.cpu_ms, run.rss_kib) = usage(child.id());
        run.cpu_ms -= cpu_at_start;
        stop(&mut child)?;
        let text = fs::read_to_string(out)?;
        match config {
            Config::SockbufStream
            | Config::SockbufStacks
            | Config::SockbufStacksAll
            | Config::SockbufStreamRaw
            | Config::SockbufSummary
            | Config::SockbufFull => {
                let end = last_json(&text)?;
                run.events = Some(end["sends"].as_u64().unwrap_or(0));
                run.lost = end["lost"].as_u64();
            }
            Config::SockbufTop => {
                // Counted, not streamed; a refresh may come before the workload's writes
                // end (or start), so only the health figures are read.
                run.lost = last_json(&text)?["lost"].as_u64();
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

/// A tracer's last line, as JSON (sockbuf's end object, or `top`'s last refresh).
fn last_json(text: &str) -> anyhow::Result<Value> {
    Ok(text
        .lines()
        .last()
        .map(serde_json::from_str)
        .transpose()?
        .unwrap_or_default())
}

/// The workload as `a` asks for it, pinned where the bench pins it.
fn workload_command(workload: &Path, a: &BenchArgs) -> Command {
    let mut w = Command::new(workload);
    if let Some(cpu) = workload_cpu(a) {
        w.args(["--cpu", &cpu.to_string()]);
    }
    w.args([
        "-n",
        &a.writes.to_string(),
        "-s",
        &a.size.to_string(),
        "-c",
        &a.conns.to_string(),
    ]);
    w
}

/// Runs the workload once under `tracer` (started off the workload's CPU, its stdout to
/// `out`), and stops it; for runs whose figures are not timed (`replay`'s recording).
pub fn record_run(
    mut tracer: Command,
    a: &BenchArgs,
    workload: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    if let Some(cpu) = workload_cpu(a) {
        off_cpu(&mut tracer, cpu)?;
    }
    let mut child = tracer
        .stdout(fs::File::create(out)?)
        .stderr(Stdio::null())
        .spawn()?;
    let t0 = Instant::now();
    while fs::metadata(out).map(|m| m.len()).unwrap_or(0) == 0 {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the recording tracer did not start within 60 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let status = workload_command(workload, a)
        .stdout(Stdio::null())
        .status()
        .context("running the workload")?;
    if !status.success() {
        bail!("workload failed");
    }
    thread::sleep(Duration::from_millis(300));
    stop(&mut child)
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
