//! The binaries the guest runs: trace-user's integration test executables and the `sockbuf`
//! binary they start, built as `cargo test` builds them, found in cargo's JSON messages.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cmd;

pub struct TestBins {
    /// The `sockbuf` binary; the tests have its absolute path compiled in.
    pub sockbuf: PathBuf,
    /// (test target name, executable), sorted by name.
    pub tests: Vec<(String, PathBuf)>,
    /// The programs trace-user's build script builds for the tests (`--stacks`' writers),
    /// found at the same paths in the guest.
    pub programs: Vec<PathBuf>,
}

/// Builds the tests without running them, optimized with `release`; `only` keeps those test
/// targets (all when empty).
pub fn build(only: &[String], release: bool) -> anyhow::Result<TestBins> {
    let mut cargo = cmd::cargo();
    cargo.args(["test", "-p", "trace-user", "--all-features", "--no-run"]);
    if release {
        cargo.arg("--release");
    }
    eprintln!(
        "xtask: $ cargo test --all-features --no-run{} --message-format=json",
        if release { " --release" } else { "" }
    );
    let mut child = cargo
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test --no-run")?;
    let mut sockbuf = None;
    let mut tests = Vec::new();
    let mut programs = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let msg: Value = serde_json::from_str(&line?).context("cargo printed a non-JSON line")?;
        if msg["reason"] == "build-script-executed"
            && msg["package_id"]
                .as_str()
                .is_some_and(|p| p.contains("/trace-user#"))
            && let Some(out) = msg["out_dir"].as_str()
        {
            let dir = PathBuf::from(out).join("programs");
            for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
                programs.push(entry?.path());
            }
            continue;
        }
        if msg["reason"] != "compiler-artifact"
            || !msg["package_id"]
                .as_str()
                .is_some_and(|p| p.contains("/trace-user#"))
        {
            continue;
        }
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str())
        else {
            continue;
        };
        let is_test = msg["profile"]["test"] == true;
        let kinds = &msg["target"]["kind"];
        if kinds[0] == "test" && (only.is_empty() || only.iter().any(|o| o == name)) {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        } else if kinds[0] == "bin" && name == "sockbuf" && !is_test {
            sockbuf = Some(PathBuf::from(exe));
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test --no-run failed: {status}");
    }
    let sockbuf = sockbuf.context("cargo built no sockbuf binary")?;
    if tests.is_empty() {
        bail!(
            "no trace-user integration test matches --test {}",
            only.join(" ")
        );
    }
    if let Some(missing) = only.iter().find(|o| !tests.iter().any(|(n, _)| n == *o)) {
        bail!("--test {missing}: trace-user has no such integration test");
    }
    tests.sort();
    Ok(TestBins {
        sockbuf,
        tests,
        programs,
    })
}
