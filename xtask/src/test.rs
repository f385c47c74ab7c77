//! Every test: lint, unit tests, and integration tests that load the real programs.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use anyhow::{Context as _, bail};

use crate::{bench, cmd, lint, setup, vm};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Only tests whose name contains this.
    filter: Option<String>,
    /// Skip the lint step.
    #[arg(long)]
    no_lint: bool,
    /// Skip the kernel matrix (`cargo xtask vm-test`: Debian 6.1, 6.12 and 7.3 under QEMU,
    /// every attach mode; about 34 minutes on two cores, most of the run).
    #[arg(long)]
    no_vm: bool,
}

/// Debian packages the tests use beyond what building sockbuf needs.
const TEST_PACKAGES: &[&str] = &[
    "bpftool",
    "redis-server",
    "redis-tools",
    "nginx",
    "curl",
    "strace",
    "iperf3",
    "tmux",
    "prometheus",
    "podman",
    "systemd",
];

/// What the churn tests' names contain (trace-user/tests/churn.rs).
pub const CHURN_TESTS: &str = "under_churn";

/// What the kTLS tests' names contain (trace-user/tests/ktls.rs): they need a kernel with
/// TLS, which every guest of the matrix has.
const KTLS_TESTS: &str = "ktls_";

/// Whether the running kernel has TLS: loaded (each namespace then has tls_stat), or a
/// module that a kTLS socket would load.
fn host_has_tls() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    std::path::Path::new("/proc/net/tls_stat").exists()
        || std::path::Path::new(&format!("/lib/modules/{}/kernel/net/tls", release.trim())).is_dir()
}

/// Tests the kernel matrix leaves out: the churn tests (emulated guests cannot make
/// thousands of connections a second), those of real programs the guests do not have
/// (iperf3 they could have: 20-30 s per guest, too much of CI's hour; tmux for `top`'s
/// screen; Prometheus and curl for `export`), and the clean-up of older versions' named
/// namespaces (no kernel in it).
pub const HOST_ONLY: &[&str] = &[
    CHURN_TESTS,
    "redis_benchmark",
    "nginx_sendfile",
    "slow_reader",
    "iperf3_",
    "stale_named_namespaces",
    "top_screen_",
    "export_",
    "deploy_",
];

/// The package the integration tests are in.
const TRACE_USER: &[&str] = &["-p", "trace-user"];

/// `cargo test --all-features EXTRA -- FILTER --test-threads=1` with `env`, its output passed
/// through; (passed, failed, exit status ok).
fn cargo_test(
    extra: &[&str],
    filter: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(u64, u64, bool)> {
    // One test at a time: each one loads its own programs and makes its own traffic, and
    // another test's traffic must not land in its numbers.
    let mut test = cmd::cargo();
    test.args(["test", "--all-features"])
        .args(extra)
        .arg("--")
        .args(filter)
        .arg("--test-threads=1")
        .envs(env.iter().copied());
    eprintln!(
        "xtask: $ cargo test --all-features {} -- --test-threads=1",
        extra.join(" ")
    );
    let mut child = test
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_result(&line) {
            passed += p;
            failed += f;
        }
    }
    Ok((passed, failed, child.wait()?.success()))
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the integration tests load eBPF programs: run them as root (sudo cargo xtask test)");
    }
    setup::run()?;
    // Real programs the tests trace or read the kernel with: redis-server and
    // redis-benchmark, nginx and curl, iperf3, strace (the reference for nginx's calls), and bpftool
    // (the churn tests count the kernel's map entries); podman, systemd-analyze and kubectl
    // check deploy/. Debian's kubectl is kubernetes-client, unless another kubectl is there
    // already (the two packages' files clash).
    setup::debian_packages(TEST_PACKAGES, &["--no-install-recommends"])?;
    if !cmd::on_path("kubectl") {
        setup::debian_packages(&["kubernetes-client"], &["--no-install-recommends"])?;
    }
    if !args.no_lint {
        lint::run()?;
    }
    let filter: Vec<&str> = args.filter.as_deref().into_iter().collect();
    // The churn tests make thousands of connections a second for half a minute: they run
    // on the release build, as users run sockbuf (a debug build cannot keep up with them).
    let mut debug_filter: Vec<&str> = filter
        .iter()
        .copied()
        .chain(["--skip", CHURN_TESTS])
        .collect();
    if !host_has_tls() {
        eprintln!(
            "xtask: this kernel has no TLS (CONFIG_TLS): the kTLS tests run in the kernel matrix only"
        );
        debug_filter.extend(["--skip", KTLS_TESTS]);
    }
    // trace-user on its own (`-p trace-user`), as the passes below, the bench and the kernel
    // matrix build it too: cargo unifies dependencies' features over the packages it is asked
    // for, so another selection would compile trace-user and its dependencies again.
    let (mut passed, mut failed, mut ok) = cargo_test(TRACE_USER, &debug_filter, &[])?;
    let (p, f, o) = cargo_test(&["-p", "trace-common", "-p", "xtask"], &filter, &[])?;
    (passed, failed, ok) = (passed + p, failed + f, ok && o);
    if args
        .filter
        .as_deref()
        .is_none_or(|f| CHURN_TESTS.contains(f) || f.contains(CHURN_TESTS))
    {
        let (p, f, o) = cargo_test(
            &[TRACE_USER, &["--release", "--test", "churn"]].concat(),
            &filter,
            &[],
        )?;
        (passed, failed, ok) = (passed + p, failed + f, ok && o);
    }
    if args.filter.is_none() {
        // The tracepoint backend's other form, for kernels without tcp_sendmsg_locked, runs
        // here too: the send-path tests again, forced into it.
        eprintln!("xtask: the send-path tests again, tracepoint backend opening calls at syscalls");
        let (p, f, o) = cargo_test(
            &[
                TRACE_USER,
                &[
                    "--test",
                    "trace_send",
                    "--test",
                    "trace_state",
                    "--test",
                    "trace_recv",
                    "--test",
                    "trace_summary",
                    "--test",
                    "filters",
                ],
            ]
            .concat(),
            &[],
            &[
                ("SOCKBUF_ATTACH", "tracepoint"),
                ("SOCKBUF_TRACEPOINT_SYSCALLS", "1"),
            ],
        )?;
        (passed, failed, ok) = (passed + p, failed + f, ok && o);
    }
    // The benchmark's quick mode: every event of a fast writer arrives, none lost.
    let quick = if args.filter.is_none() {
        Some(bench::run(bench::BenchArgs::quick()))
    } else {
        None
    };
    match &quick {
        Some(Ok(())) => passed += 1,
        Some(Err(e)) => {
            eprintln!("xtask: bench --quick failed: {e:#}");
            failed += 1;
        }
        None => {}
    }
    // The kernel matrix: the same tests in every attach mode on Debian's 6.1, 6.12 and 7.3;
    // each kernel × mode counts as one test.
    if args.filter.is_none() && !args.no_vm {
        match vm::run(vm::VmTestArgs::ci()) {
            Ok(cells) => passed += cells,
            Err(e) => {
                eprintln!("xtask: vm-test failed: {e:#}");
                failed += 1;
            }
        }
    }
    // One closing line for the whole run: cargo's last line is a doc-test binary's "0 passed".
    println!("tests: {passed} passed, {failed} failed");
    if !ok || failed > 0 {
        bail!("tests failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// `test result: ok. 7 passed; 0 failed; …` → (7, 0).
pub fn parse_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let num = |word: &str| {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(word)
            })
            .and_then(|n| n.trim().parse().ok())
    };
    Some((num(" passed")?, num(" failed")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_cargo_results() {
        let ok = "test result: ok. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 6.91s";
        assert_eq!(super::parse_result(ok), Some((7, 0)));
        let bad = "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(super::parse_result(bad), Some((3, 1)));
        assert_eq!(super::parse_result("running 3 tests"), None);
    }
}
