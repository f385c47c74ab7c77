//! The attach backends on this kernel: every program is loaded for real, so the kernel's
//! verifier checks the fentry and kprobe programs even where they cannot attach.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// Runs sockbuf with `args`, which must succeed; its stdout.
fn sockbuf_ok(args: &[&str]) -> Vec<u8> {
    let out = Command::new(SOCKBUF).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "sockbuf {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn check() -> Vec<Value> {
    String::from_utf8(sockbuf_ok(&["check", "--json"]))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn check_loads_every_backend_and_auto_takes_the_first_that_attaches() {
    let backends = check();
    let names: Vec<&str> = backends
        .iter()
        .map(|b| b["attach"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["fentry", "tp_btf", "kprobe", "tracepoint"],
        "in order of preference"
    );
    for b in &backends {
        // A rejection by the verifier (EACCES) is never a kernel's missing hook.
        assert!(
            !b["why"].as_str().unwrap_or("").contains("os error 13"),
            "the verifier refused a program: {b}"
        );
        if b["attached"] != true {
            assert!(
                b["why"].as_str().is_some_and(|w| !w.is_empty()),
                "a refusal says why: {b}"
            );
        }
    }
    // Where the kernel has the kprobe program type, the kprobe programs must pass its verifier,
    // whether or not they can attach (this kernel has no kprobe PMU).
    assert_eq!(backends[2]["verified"], true, "{}", backends[2]);
    let first = backends
        .iter()
        .find(|b| b["attached"] == true)
        .expect("some backend attaches");
    // Explicitly auto: SOCKBUF_ATTACH may set another default (the kernel matrix runs every mode).
    let trace = Trace::start(&["--attach", "auto", "-p", &std::process::id().to_string()]);
    assert_eq!(trace.start["attach"], first["attach"]);
    let refused = trace.start["refused"].as_array().unwrap();
    let better = backends
        .iter()
        .take_while(|b| b["attached"] != true)
        .count();
    assert_eq!(
        refused.len(),
        better,
        "auto names every better backend it passed over"
    );
    trace.stop();
}

#[test]
fn explicit_backends_that_cannot_attach_exit_2_with_the_reason() {
    for b in check() {
        if b["attached"] == true {
            continue;
        }
        let mode = b["attach"].as_str().unwrap();
        let out = Command::new(SOCKBUF)
            .args(["trace", "--attach", mode, "-d", "1s"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--attach {mode}: {stderr}");
        assert!(
            stderr.contains(b["why"].as_str().unwrap()),
            "--attach {mode} gives check's reason ({}): {stderr}",
            b["why"]
        );
        assert_eq!(stderr.lines().count(), 1);
    }
}

/// The loader sets read-only globals before load (the output, the filters) and the verifier
/// prunes each program by them: a backend that attaches must load in every output, not only
/// in `check`'s (a raw program reading an `Option`'s absent payload was refused on 6.18 with
/// `R8 !read_ok`, in streaming only, where `auto` picks tp_btf).
#[test]
fn every_attaching_backend_loads_in_every_output() {
    // The kernel matrix runs the whole suite in each mode, every output among it: there this
    // would only repeat it, at half a minute a `check` under emulation.
    if std::env::var_os("SOCKBUF_ATTACH").is_some() {
        return;
    }
    let pid = std::process::id().to_string();
    for b in check() {
        if b["attached"] != true {
            continue;
        }
        let mode = b["attach"].as_str().unwrap();
        for extra in [&[][..], &["--summary"], &["--summary", "--full"]] {
            let base = ["trace", "--attach", mode, "--json", "-d", "1s", "-p", &pid];
            sockbuf_ok(&[&base[..], extra].concat());
        }
    }
}
