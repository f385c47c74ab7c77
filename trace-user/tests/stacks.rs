//! `--stacks`, `--folded`, `--flamegraph`: writers built by trace-user's build script (C and
//! Rust, frame pointers and debug info; a stripped copy) block in `push_until_full` on a
//! peer that reads nothing for a while, and loop on EAGAIN in `retry_on_eagain`. Each says
//! how long it spent inside its blocking writes and how many EAGAINs it got: the folded
//! stacks must hold both names, the time asleep within 10 % of the first, and exactly the
//! second; the flame graphs must parse and name them.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{guard::ScratchDir, *};
use serde_json::Value;

/// How long the writers' readers read nothing (the EAGAIN one: half of it).
const HOLD_MS: u64 = 800;

fn program(name: &str) -> PathBuf {
    Path::new(env!("SOCKBUF_TEST_PROGRAMS")).join(name)
}

/// What a writer measured itself.
struct Measured {
    blocked_us: u64,
    eagains: u64,
}

/// Runs writer `name` (once the tracer is attached) and reads what it measured.
fn run_writer(name: &str) -> Measured {
    let mut child = Command::new(program(name))
        .arg(HOLD_MS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} (built by trace-user's build script): {e}"));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{name} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let value = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} did not print {key}: {text}"))
    };
    Measured {
        blocked_us: value("push_until_full_ns") / 1000,
        eagains: value("retry_on_eagain_eagains"),
    }
}

/// Whether a frame names function `f` (C's `f`, Rust's `crate::f`).
fn names(frame: &str, f: &str) -> bool {
    frame == f || frame.ends_with(&format!("::{f}"))
}

/// The sum of the folded file's lines whose stack holds function `f` (any, for `None`).
fn folded_sum_of(path: &Path, f: Option<&str>) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(stack, _)| f.is_none_or(|f| stack.split(';').any(|fr| names(fr, f))))
        .map(|(_, v)| v.parse::<u64>().expect("a count"))
        .sum()
}

fn folded_sum(path: &Path, f: &str) -> u64 {
    folded_sum_of(path, Some(f))
}

/// The text of every `<text>` of an SVG (which must parse).
fn svg_text(path: &Path) -> String {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // inferno's SVG starts with a DOCTYPE, which roxmltree reads only when allowed to.
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&svg, opts)
        .expect("the flame graph is well-formed SVG");
    doc.descendants()
        .filter(|n| n.has_tag_name("title") || n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A trace of command `comm` writing folded stacks to `w.folded` in a scratch directory of
/// its own (`name`), with the arguments `extra` makes of that directory; the directory and
/// the file's path.
fn trace_folded(
    name: &str,
    comm: &str,
    extra: impl FnOnce(&Path) -> Vec<String>,
) -> (Trace, ScratchDir, PathBuf) {
    let dir = ScratchDir::new(name);
    let folded = dir.join("w.folded");
    let mut args = vec![
        "-c".to_owned(),
        comm.to_owned(),
        "--folded".to_owned(),
        folded.to_string_lossy().into_owned(),
    ];
    args.extend(extra(&dir));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Trace::start(&args), dir, folded)
}

fn user_frames(e: &Value) -> Vec<&str> {
    e["stack"]["user"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Traces writer `name` with stacks; checks its folded stacks and flame graphs against what
/// it measured, and its events' stacks.
fn check_writer(name: &str) {
    let comm = &name[..name.len().min(15)];
    let (trace, dir, folded) = trace_folded("stacks", comm, |dir| {
        let svg = dir.join("w.svg").to_string_lossy().into_owned();
        vec!["--stacks".into(), "--flamegraph".into(), svg]
    });
    let svg = dir.join("w.svg");
    let m = run_writer(name);
    let out = trace.stop();
    assert_eq!(out.last().unwrap()["stacks_lost"], 0);

    let asleep_us = folded_sum(&folded, "push_until_full");
    assert!(
        asleep_us.abs_diff(m.blocked_us) * 10 <= m.blocked_us,
        "{name}: {asleep_us} us asleep in push_until_full's stacks, it measured {} us in its writes",
        m.blocked_us
    );
    let eagain = folded.with_extension("folded.eagain");
    assert_eq!(
        folded_sum(&eagain, "retry_on_eagain"),
        m.eagains,
        "{name}: EAGAINs in retry_on_eagain's stacks"
    );

    // The events carry them too: every EAGAIN, and the sleeps.
    let sends_eagain: Vec<&Value> = out
        .iter()
        .filter(|e| e["kind"] == "send" && e["ret"] == -11)
        .collect();
    assert_eq!(sends_eagain.len() as u64, m.eagains);
    assert!(
        sends_eagain
            .iter()
            .all(|e| user_frames(e).iter().any(|f| names(f, "retry_on_eagain"))),
        "{name}: an EAGAIN event without retry_on_eagain in its stack"
    );
    let sleeps: Vec<&Value> = out.iter().filter(|e| e["kind"] == "block").collect();
    assert!(!sleeps.is_empty(), "{name} never slept");
    assert!(
        sleeps
            .iter()
            .all(|e| user_frames(e).iter().any(|f| names(f, "push_until_full"))),
        "{name}: a sleep without push_until_full in its stack"
    );
    if let Some(e) = sleeps.iter().find(|e| {
        !e["stack"]["kernel"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "sk_stream_wait_memory")
    }) {
        panic!("{name}: a sleep whose kernel stack is not in sk_stream_wait_memory: {e}");
    }

    assert!(
        svg_text(&svg).contains("push_until_full"),
        "{name}: flame graph"
    );
    let eagain_svg = dir.join("w.eagain.svg");
    assert!(
        svg_text(&eagain_svg).contains("retry_on_eagain"),
        "{name}: EAGAIN flame graph"
    );
}

#[test]
fn stacks_of_a_c_writer() {
    check_writer("stuck_writer");
}

#[test]
fn stacks_of_a_rust_writer() {
    check_writer("stuck_writer_rs");
}

/// Without symbols: frames are the file and offset, and the counts still hold.
#[test]
fn stacks_of_a_stripped_writer() {
    let (trace, _dir, folded) = trace_folded("stacks-stripped", "stuck_writer_st", |_| vec![]);
    let m = run_writer("stuck_writer_stripped");
    trace.stop();
    let text = std::fs::read_to_string(&folded).unwrap();
    assert!(
        text.contains("stuck_writer_stripped+0x"),
        "no file+offset frames: {text}"
    );
    assert!(
        !text.contains("push_until_full"),
        "symbols in a stripped binary?"
    );
    let eagain = folded.with_extension("folded.eagain");
    assert_eq!(folded_sum_of(&eagain, None), m.eagains);
}

/// `--stacks all`: every send call's stack, summed in FILE.calls: as many as its events.
#[test]
fn stacks_all_sums_every_send_call() {
    let (trace, _dir, folded) = trace_folded("stacks-all", "stuck_writer", |_| {
        vec!["--stacks".into(), "all".into()]
    });
    run_writer("stuck_writer");
    let out = trace.stop();
    let sends = out.iter().filter(|e| e["kind"] == "send").count() as u64;
    assert!(
        out.iter()
            .filter(|e| e["kind"] == "send")
            .all(|e| !user_frames(e).is_empty()),
        "a send without its stack"
    );
    let calls = folded.with_extension("folded.calls");
    let summed = folded_sum_of(&calls, None);
    assert_eq!(summed, sends);
    assert!(folded_sum(&calls, "push_until_full") > 0);
    assert!(folded_sum(&calls, "retry_on_eagain") > 0);
}

/// `fill --mode blocking --stacks`: the report names the experiment's writer as the
/// function that slept, for at least the sleep the report measured; `--flamegraph` draws it.
#[test]
fn stacks_fill_names_the_writer_that_slept() {
    let dir = ScratchDir::new("stacks-fill");
    let svg = dir.join("fill.svg");
    let (events, report) = experiment(
        "fill",
        "fill_report",
        &[
            "--mode",
            "blocking",
            "--stacks",
            "--flamegraph",
            &svg.to_string_lossy(),
        ],
        |_| {},
    );
    let slept = &report["slept_in"];
    assert_eq!(
        slept["function"], "trace_user::fill::experiment::blocking_writer",
        "{report}"
    );
    assert!(
        u(&slept["asleep_ns"]) >= u(&report["blocked_ns"]),
        "{report}"
    );
    let sleeps = events.iter().filter(|e| e["kind"] == "block").count();
    assert!(sleeps > 0);
    assert!(svg_text(&svg).contains("blocking_writer"));
}

/// A folded file that cannot be written: a one-line error before anything is traced, exit 2.
#[test]
fn stacks_unwritable_folded_file_is_a_clear_error() {
    let out = Command::new(SOCKBUF)
        .args(["trace", "--folded", "/nonexistent-dir/w.folded", "-d", "1s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot write --folded"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
