use std::path::Path;

use aya_build::{Package, Toolchain};

/// Builds the eBPF programs (trace-ebpf's binary) for the BPF target with BTF, into OUT_DIR.
fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root_dir = Path::new(&manifest_dir).join("../trace-ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    // The nightly pinned in trace-ebpf/rust-toolchain.toml (its LLVM must match bpf-linker's).
    let pin = root_dir.to_owned() + "/rust-toolchain.toml";
    println!("cargo:rerun-if-changed={pin}");
    let pin = std::fs::read_to_string(&pin)?;
    let channel = pin
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|c| c.trim_matches('"'))
        .ok_or_else(|| anyhow::anyhow!("no channel in trace-ebpf/rust-toolchain.toml"))?;
    aya_build::build_ebpf(
        [Package {
            name: "trace-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(channel),
    )
}
