use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};
use aya_build::{Package, Toolchain};

/// Builds the eBPF programs (trace-ebpf's binary) for the BPF target with BTF, into OUT_DIR;
/// and the `--stacks` tests' writers (tests/programs), whose directory the tests get as
/// `SOCKBUF_TEST_PROGRAMS`.
fn main() -> anyhow::Result<()> {
    test_programs()?;
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
    share_ebpf_target_dir()?;
    aya_build::build_ebpf(
        [Package {
            name: "trace-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(channel),
    )
}

/// aya-build gives the eBPF crate a cargo target directory inside OUT_DIR, which is new for
/// every profile and every set of packages cargo builds together (clippy, `cargo test`,
/// `--release`, `-p trace-user`): each would build core for BPF and the programs again, about a
/// minute. The eBPF build is the same in all of them (always `--release`, the same flags), so
/// that directory is made a link to one beside cargo's profiles, and cargo's own fingerprints
/// decide what to rebuild; its lock keeps two builds out of each other's way.
fn share_ebpf_target_dir() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // OUT_DIR is <target>/[<triple>/]<profile>/build/trace-user-<hash>/out.
    let Some(profiles) = out.ancestors().nth(4) else {
        return Ok(());
    };
    let shared = profiles.join("ebpf");
    let link = out.join("aya-build/target/trace-ebpf");
    std::fs::create_dir_all(&shared)?;
    std::fs::create_dir_all(link.parent().expect("a parent"))?;
    match std::fs::read_link(&link) {
        Ok(to) if to == shared => return Ok(()),
        Ok(_) => std::fs::remove_file(&link)?,
        Err(_) if link.is_dir() => std::fs::remove_dir_all(&link)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&shared, &link)
        .with_context(|| format!("linking {} to {}", link.display(), shared.display()))
}

/// The programs the `--stacks` tests trace, into OUT_DIR/programs: built here because the
/// kernel matrix's guests have no compiler (the guest gets this directory as it is). With
/// frame pointers (the stack walk follows them) and debug info; a stripped copy too.
fn test_programs() -> anyhow::Result<()> {
    let src = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("tests/programs");
    let out = Path::new(&std::env::var("OUT_DIR")?).join("programs");
    std::fs::create_dir_all(&out)?;
    let run = |cmd: &mut Command| -> anyhow::Result<()> {
        let status = cmd.status().with_context(|| format!("{cmd:?}"))?;
        if !status.success() {
            bail!("{cmd:?}: {status}");
        }
        Ok(())
    };
    let c = src.join("stuck_writer.c");
    let rs = src.join("stuck_writer.rs");
    println!("cargo:rerun-if-changed={}", c.display());
    println!("cargo:rerun-if-changed={}", rs.display());
    run(Command::new("cc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(out.join("stuck_writer"))
        .arg(&c))?;
    run(Command::new("strip")
        .arg("-s")
        .arg("-o")
        .arg(out.join("stuck_writer_stripped"))
        .arg(out.join("stuck_writer")))?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    run(Command::new(rustc)
        .args(["--edition", "2024", "-g", "-C", "opt-level=1"])
        .args(["-C", "force-frame-pointers=yes", "-o"])
        .arg(out.join("stuck_writer_rs"))
        .arg(&rs))?;
    println!("cargo:rustc-env=SOCKBUF_TEST_PROGRAMS={}", out.display());
    Ok(())
}
