//! `cargo xtask vm-test`: trace-user's integration tests on real Debian kernels, booted under
//! QEMU, once per attach mode, so that the fentry and kprobe backends (which this project's own
//! kernel refuses) run end to end. Kernels × modes, pass/fail/refused, with timings.

mod bins;
mod guest_log;
mod initramfs;
mod kernels;
mod qemu;
mod report;

use std::{fs, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

use self::{guest_log::GuestLog, report::Verdict};
use crate::{cmd, setup};

/// Host packages: QEMU, the guest's busybox, strip for the binaries, xz and zstd for the
/// kernels' modules, and the tools copied into the guest.
const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "binutils",
    "xz-utils",
    "zstd",
    "iproute2",
    "util-linux",
    "bash",
    // A real program the guests run tests with.
    "bpftool",
];

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Fentry,
    #[value(name = "tp_btf")]
    TpBtf,
    Kprobe,
    Tracepoint,
    Auto,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Inject {
    /// A step that fails.
    Fail,
    /// A step that never ends.
    Hang,
    /// A kernel panic.
    Panic,
}

#[derive(clap::Args)]
pub struct VmTestArgs {
    /// Kernel release lines to boot: the newest Debian cloud image of each (repeatable).
    #[arg(long = "kernel", value_name = "NAME", default_values_t = ["6.1".to_owned(), "6.12".to_owned(), "7.3".to_owned()])]
    kernels: Vec<String>,
    /// Attach modes to run the tests in, on every kernel (repeatable); `auto` must pick fentry.
    #[arg(long = "mode", value_enum, default_values_t = [Mode::Fentry, Mode::TpBtf, Mode::Kprobe, Mode::Tracepoint, Mode::Auto])]
    modes: Vec<Mode>,
    /// Only this integration test binary of trace-user, e.g. trace_send (repeatable; default:
    /// all).
    #[arg(long = "test", value_name = "NAME")]
    tests: Vec<String>,
    /// Only tests whose name contains this, in every test binary (repeatable).
    #[arg(long = "filter", value_name = "SUBSTRING")]
    filters: Vec<String>,
    /// Skip tests whose name contains this, in every test binary (repeatable).
    #[arg(long = "skip", value_name = "SUBSTRING")]
    skips: Vec<String>,
    /// Seconds one test binary may run in the guest before it is stopped and failed.
    #[arg(long, value_name = "SECONDS", default_value_t = 150)]
    test_timeout: u64,
    /// Run the debug build, as `cargo test` builds it. By default the tests and sockbuf are
    /// built optimized (`cargo test --release`): under emulation a debug sockbuf takes about
    /// 7 s to start, longer than some tests wait for it, and the suite takes three times as long.
    #[arg(long)]
    debug: bool,
    /// Virtual CPUs per guest (QEMU still emulates them on one host thread).
    #[arg(long, default_value_t = 1)]
    smp: u32,
    /// Boot each kernel once for all modes, instead of once per mode (a hang or crash then
    /// costs the kernel's remaining modes).
    #[arg(long)]
    one_boot: bool,
    /// Seconds a guest may take from power-on to its last line; then it is killed and failed.
    /// Default: room for every test binary's --test-timeout, and two minutes.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Guests run at once (default: one per host core; each emulates its vCPU on one host
    /// thread).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Show the guests' consoles as they run (always kept in target/vm/logs/).
    #[arg(long, short)]
    verbose: bool,
    /// A deliberate failure in every guest, to check that vm-test catches it.
    #[arg(long, value_enum, hide = true)]
    inject: Option<Inject>,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::TpBtf => "tp_btf",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
            Self::Auto => "auto",
        }
    }
}

impl VmTestArgs {
    /// What `cargo xtask test` runs: every kernel and mode, defaults otherwise.
    pub fn ci() -> Self {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: VmTestArgs,
        }
        let skips = crate::test::HOST_ONLY.iter().flat_map(|t| ["--skip", t]);
        Wrapper::parse_from(["vm-test"].into_iter().chain(skips)).args
    }
}

/// Runs the matrix; the number of kernel × mode cells that passed (or were rightly refused).
pub fn run(args: VmTestArgs) -> anyhow::Result<u64> {
    if let Some(f) = args
        .filters
        .iter()
        .chain(&args.skips)
        .find(|f| f.is_empty() || f.contains([' ', ',']))
    {
        bail!("{f:?}: the guest gets filters on the kernel command line: no spaces or commas");
    }
    // The eBPF build's own prerequisites first, then the guests'.
    setup::run()?;
    setup::debian_packages(HOST_PACKAGES, &["--no-install-recommends"])?;
    let vm_dir = target_dir()?.join("vm");
    let logs_dir = vm_dir.join("logs");
    fs::create_dir_all(&logs_dir).with_context(|| format!("creating {}", logs_dir.display()))?;
    let kernels = kernels::fetch(&vm_dir, &args.kernels)?;
    let bins = bins::build(&args.tests, !args.debug)?;
    let initrd = initramfs::build(&vm_dir, &bins, &kernels)?;
    let modes: Vec<String> = args.modes.iter().map(|m| m.name().to_owned()).collect();
    // One guest per kernel and mode, or per kernel with --one-boot.
    let groups: Vec<Vec<String>> = if args.one_boot {
        vec![modes.clone()]
    } else {
        modes.iter().map(|m| vec![m.clone()]).collect()
    };
    let injected = usize::from(matches!(args.inject, Some(Inject::Fail)));
    let binaries = bins.tests.len() + injected;
    // `auto` runs only `backends` where it is in the guest (init.sh says why).
    let auto_binaries = if bins.tests.iter().any(|(name, _)| name == "backends") {
        1 + injected
    } else {
        binaries
    };
    let binaries_of = |mode: &str| {
        if mode == "auto" {
            auto_binaries
        } else {
            binaries
        }
    };
    let steps = binaries * groups[0].len();
    let timeout = args
        .timeout
        .unwrap_or(steps as u64 * args.test_timeout + 120);
    // Each guest emulates its one vCPU on one host thread: as many run at once as the host
    // has cores (CI's two halve the matrix's time), each on its own core.
    let jobs: Vec<(&kernels::Kernel, &Vec<String>)> = kernels
        .iter()
        .flat_map(|k| groups.iter().map(move |g| (k, g)))
        .collect();
    let workers = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(k, group)) = jobs.get(i) else {
                        break;
                    };
                    let r = run_guest(k, group, &args, &initrd, timeout, &logs_dir);
                    done.lock().expect("no worker panics").push((i, r));
                }
            });
        }
    });
    let mut done = done.into_inner().expect("no worker panics");
    done.sort_by_key(|(i, _)| *i);
    let mut cells = Vec::new();
    let mut logs: Vec<(String, String, GuestLog)> = Vec::new();
    for (i, r) in done {
        let (k, group) = jobs[i];
        let log = r?;
        cells.extend(report::judge(&k.name, group, &log, binaries_of));
        logs.push((k.name.clone(), k.release.clone(), log));
    }
    let log_refs: Vec<(String, String, &GuestLog)> = logs
        .iter()
        .map(|(k, r, l)| (k.clone(), r.clone(), l))
        .collect();
    let md = report::markdown(&cells, &log_refs);
    let results = vm_dir.join("results.md");
    fs::write(&results, &md).with_context(|| format!("writing {}", results.display()))?;
    println!("{md}");
    let failed = cells
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Fail(_)))
        .count();
    println!(
        "vm-test: {} passed, {failed} failed (kernel × mode; also in {}, consoles in {})",
        cells.len() - failed,
        results.display(),
        logs_dir.display()
    );
    if failed > 0 {
        bail!("{failed} kernel × mode combinations failed");
    }
    Ok(cells.len() as u64)
}

/// Boots `k` once for the modes of `group` and reads its console.
fn run_guest(
    k: &kernels::Kernel,
    group: &[String],
    args: &VmTestArgs,
    initrd: &std::path::Path,
    timeout: u64,
    logs_dir: &std::path::Path,
) -> anyhow::Result<GuestLog> {
    let label = format!("{} {}", k.name, group.join(","));
    let params = params(group, args);
    let log_path = logs_dir.join(format!("{}-{}.log", k.name, group.join("-")));
    eprintln!("xtask: [{label}] booting {} ({})", k.release, k.package);
    let mut log = GuestLog::default();
    let console = qemu::boot(
        k,
        args.smp,
        initrd,
        &params,
        Duration::from_secs(timeout),
        &log_path,
        &mut |at, line| {
            if args.verbose {
                eprintln!("[{label}] [{:8.3}] {line}", at.as_secs_f64());
            }
            if let Some(msg) = log.feed(at, line) {
                eprintln!("xtask: [{label}] {msg}");
            }
        },
    )?;
    log.died = match console.end {
        qemu::End::Done => None,
        qemu::End::Timeout => Some(format!("guest killed at the {timeout} s timeout (hung?)")),
        qemu::End::Exited => Some("guest stopped before /init finished (kernel panic?)".to_owned()),
    };
    if let Some(d) = &log.died {
        eprintln!("xtask: [{label}] {d}; console in {}", log_path.display());
    }
    eprintln!(
        "xtask: [{label}] {:.1} s in all",
        console.elapsed.as_secs_f64()
    );
    Ok(log)
}

/// The kernel command line words /init reads (the kernel passes NAME=VALUE words it does not
/// know to init's environment; values cannot hold spaces, so lists are comma-separated).
fn params(modes: &[String], args: &VmTestArgs) -> String {
    let mut p = format!(
        "VMTEST_MODES={} VMTEST_LIMIT={}",
        modes.join(","),
        args.test_timeout
    );
    if !args.filters.is_empty() {
        p.push_str(&format!(" VMTEST_FILTER={}", args.filters.join(",")));
    }
    if !args.skips.is_empty() {
        p.push_str(&format!(" VMTEST_SKIP={}", args.skips.join(",")));
    }
    if let Some(inject) = args.inject {
        let name = match inject {
            Inject::Fail => "fail",
            Inject::Hang => "hang",
            Inject::Panic => "panic",
        };
        p.push_str(&format!(" VMTEST_INJECT={name}"));
    }
    p
}

/// The workspace's target directory, as cargo has it.
fn target_dir() -> anyhow::Result<PathBuf> {
    let meta = cmd::output(cmd::cargo().args(["metadata", "--format-version=1", "--no-deps"]));
    let meta: serde_json::Value = serde_json::from_str(&meta).context("reading cargo metadata")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}
