//! Formatting and clippy, as CI checks them.

use std::process::Command;

use crate::cmd;

fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"]);
    c
}

pub fn run() -> anyhow::Result<()> {
    // group_imports = "StdExternalCrate" needs nightly rustfmt.
    cmd::run(nightly_cargo().args(["fmt", "--all", "--", "--check"]))?;
    // Host crates (the default members).
    cmd::run(cmd::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The eBPF crate, for the target it really builds for.
    cmd::run(
        nightly_cargo()
            .current_dir("trace-ebpf")
            .args([
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                "--cfg=bpf_target_arch=\"x86_64\"",
            ),
    )
}
