//! Installs what is missing, and says so. Safe to run again: each step checks first.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd;

/// bpf-linker must be built against the LLVM it links with; this is the pair known to work.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PKG: &str = "llvm-22-dev";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "set-up installs packages and mounts filesystems: run it as root (sudo cargo xtask …)"
        );
    }
    rust_src()?;
    apt_packages()?;
    bpf_linker()?;
    mount("tracefs", "/sys/kernel/tracing", "events")?;
    mount("bpf", "/sys/fs/bpf", "")?;
    eprintln!("xtask: set-up complete");
    Ok(())
}

/// The eBPF crate builds core from source on nightly (`-Z build-std=core`), on the nightly
/// pinned in trace-ebpf/rust-toolchain.toml (its LLVM must be bpf-linker's), with rustfmt and
/// clippy for the lint.
fn rust_src() -> anyhow::Result<()> {
    let toolchain = cmd::ebpf_toolchain()?;
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        &toolchain,
        "--installed",
    ]));
    let has = |c: &str| installed.lines().any(|l| l.starts_with(c));
    if has("rust-src") && has("rustfmt") && has("clippy") {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {toolchain} with rust-src, rustfmt and clippy (to build and lint the eBPF programs)"
    );
    cmd::run(Command::new("rustup").args([
        "toolchain",
        "install",
        &toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src,rustfmt,clippy",
    ]))
}

fn dpkg_installed(pkg: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .contains("install ok installed")
}

/// Debian packages: LLVM for bpf-linker, iproute2 for `ip netns` and `ss`, util-linux's
/// setpriv for the non-root test.
fn apt_packages() -> anyhow::Result<()> {
    debian_packages(&[LLVM_PKG, "iproute2", "util-linux"], &[])
}

/// Installs those of `wanted` that are not installed, and says which; `apt_args` such as
/// `--no-install-recommends` go to `apt-get install`.
pub fn debian_packages(wanted: &[&str], apt_args: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(apt_args)
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = cmd::output(Command::new("bpf-linker").arg("--version"));
    if version.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {LLVM_PKG} (about 2 minutes, once)"
    );
    cmd::run(
        cmd::cargo()
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )?;
    if !cmd::succeeds(Command::new("bpf-linker").arg("--version")) {
        bail!("bpf-linker was installed but is not in PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

/// Mounts `fstype` at `target` unless something is mounted there already (`probe` is a path
/// inside that exists once it is).
fn mount(fstype: &str, target: &str, probe: &str) -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(target))
        || (!probe.is_empty() && Path::new(target).join(probe).exists());
    if mounted {
        return Ok(());
    }
    eprintln!("xtask: mounting {fstype} at {target}");
    cmd::run(Command::new("mount").args(["-t", fstype, fstype, target]))
}
