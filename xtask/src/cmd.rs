//! Running commands and saying what runs.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Runs `cmd`, echoing it first; fails when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("running {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

/// Whether `cmd` succeeds, quietly (for probes).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cmd`'s stdout, quietly; empty when it cannot run.
pub fn output(cmd: &mut Command) -> String {
    cmd.stderr(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The nightly that builds and lints the eBPF programs, pinned in
/// trace-ebpf/rust-toolchain.toml (trace-user/build.rs reads the same line).
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../trace-ebpf/rust-toolchain.toml"
    );
    let pin = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    pin.lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|c| c.trim_matches('"').to_owned())
        .with_context(|| format!("no channel in {path}"))
}

/// `cargo` of the eBPF programs' pinned nightly.
pub fn ebpf_cargo() -> anyhow::Result<Command> {
    let mut c = Command::new("rustup");
    c.args(["run", &ebpf_toolchain()?, "cargo"]);
    Ok(c)
}

pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

pub fn is_root() -> bool {
    // /proc/self/status's Uid line: real, effective, saved, fs.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether an executable `name` is on `PATH`.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}
