//! Formatting and clippy, as CI checks them.

use crate::cmd;

pub fn run() -> anyhow::Result<()> {
    // group_imports = "StdExternalCrate" needs nightly rustfmt.
    cmd::run(cmd::ebpf_cargo()?.args(["fmt", "--all", "--", "--check"]))?;
    // Host crates (the default members).
    cmd::run(cmd::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The eBPF crate, for the target it really builds for.
    cmd::run(
        cmd::ebpf_cargo()?
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
