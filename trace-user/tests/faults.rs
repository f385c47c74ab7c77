//! What sockbuf leaves behind and says when things go wrong: SIGKILL (programs, maps,
//! namespaces), a ring buffer too small for the load (every lost event counted), and an
//! output that closes or fills.

mod common;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read},
    net::UdpSocket,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

/// Ids of the BPF objects of `kind` (`prog`, `map`, `link`) loaded now.
fn bpf_ids(kind: &str) -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("bpftool (installed by cargo xtask test's set-up)");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["id"].as_u64())
        .collect()
}

fn all_ids() -> [BTreeSet<u64>; 3] {
    ["prog", "map", "link"].map(bpf_ids)
}

/// All a finished child wrote on its (piped) stderr.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut err = String::new();
    let mut pipe = child.stderr.take().expect("stderr piped");
    pipe.read_to_string(&mut err).expect("read stderr");
    err
}

/// Waits for the line of `kind` on a child's JSON stdout; returns it.
fn line_of(lines: &mut impl Iterator<Item = std::io::Result<String>>, kind: &str) -> Value {
    for line in lines {
        let v: Value = serde_json::from_str(&line.expect("read")).expect("JSON");
        if v["kind"] == kind {
            return v;
        }
    }
    panic!("sockbuf ended before a {kind} line");
}

#[test]
fn sigkill_of_trace_leaves_no_program_map_or_link() {
    let before = all_ids();
    let mut child = Command::new(SOCKBUF)
        .args(["trace", "--json", "--summary", "--full"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sockbuf");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    line_of(&mut lines, "start");
    let during = all_ids();
    let ours: Vec<BTreeSet<u64>> = during
        .iter()
        .zip(&before)
        .map(|(d, b)| d.difference(b).copied().collect())
        .collect();
    assert!(
        ours.iter().all(|s| !s.is_empty()),
        "sockbuf's programs, maps and links are loaded: {ours:?}"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    // The kernel frees them once their last file descriptor is gone (after an RCU grace).
    wait_until(
        Duration::from_secs(10),
        "sockbuf's BPF objects gone",
        || {
            all_ids()
                .iter()
                .zip(&ours)
                .all(|(now, ours)| now.is_disjoint(ours))
        },
    );
}

/// `sockbuf fill --hold 60s` once it has reported, its report, and its namespace.
fn holding_fill() -> (std::process::Child, Value, (u64, u64)) {
    let mut child = Command::new(SOCKBUF)
        .args(["fill", "--json", "--hold", "60s"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sockbuf fill");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let report = line_of(&mut lines, "fill_report");
    let path = report["netns"].as_str().expect("netns");
    let ns = netns_inode(path).expect("the namespace while the sockets are held");
    (child, report, ns)
}

#[test]
fn sigkill_of_fill_leaves_no_namespace() {
    let (mut child, _, ns) = holding_fill();
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    wait_until(Duration::from_secs(10), "the namespace gone", || {
        !netns_alive(ns)
    });
}

/// The smallest ring buffer and a writer far faster than sockbuf can print: every event
/// the ring had no room for is counted, exactly.
#[test]
fn overload_counts_every_lost_event() {
    const CALLS: u64 = 20_000;
    let pid = std::process::id().to_string();
    let mut child = Command::new(SOCKBUF)
        .args(["trace", "--json", "-p", &pid, "--ring-size", "4096"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockbuf");
    let stdout = child.stdout.take().unwrap();
    let (started_tx, started) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        line_of(&mut lines, "start");
        started_tx.send(()).unwrap();
        lines
            .map(|l| serde_json::from_str(&l.expect("read")).expect("JSON"))
            .collect::<Vec<Value>>()
    });
    started.recv().expect("sockbuf started");
    // A UDP socket that nobody reads: each sendto is one `udp_send` and one `udp_out`
    // record, nothing else.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..CALLS {
        sender.send_to(&[1], sink.local_addr().unwrap()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let err = stderr_of(&mut child);
    let out = reader.join().unwrap();
    let end = out.last().expect("end");
    let ino = ino(&sender);
    let printed = (events(&out, "udp_send", ino).len() + events(&out, "udp_out", ino).len()) as u64;
    let (lost, by_kind) = (u(&end["lost"]), &end["records_by_kind"]);
    assert!(lost > 0, "the ring overflowed: {end}");
    assert_eq!(
        u(&by_kind["udp_send"]) + u(&by_kind["udp_out"]),
        printed,
        "every record read was printed: {end}"
    );
    assert_eq!(
        printed + lost,
        2 * CALLS,
        "printed + lost = the records the kernel made: {end}"
    );
    assert!(
        err.contains(&format!("{lost} events lost")),
        "said on stderr: {err}"
    );
}

/// Runs `sockbuf trace --json -p SELF` with `stdout`, makes traffic until it exits (at most
/// 20 s); returns its exit code and stderr.
fn trace_until_exit(
    stdout: Stdio,
    on_spawn: impl FnOnce(&mut std::process::Child),
) -> (i32, String) {
    let pid = std::process::id().to_string();
    let mut child = Command::new(SOCKBUF)
        .args(["trace", "--json", "-p", &pid])
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockbuf");
    on_spawn(&mut child);
    let (mut c, _s) = tcp_pair();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "sockbuf did not exit"
        );
        std::io::Write::write_all(&mut c, &[1u8; 10]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = stderr_of(&mut child);
    (status.code().expect("exit code"), err)
}

/// `sockbuf trace | head -1`: the reader has enough; sockbuf ends at once, quietly.
#[test]
fn output_closed_early_ends_quietly() {
    let (code, err) = trace_until_exit(Stdio::piped(), |child| {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        line_of(&mut lines, "start");
        // `head -1` exits: the pipe's read end closes.
    });
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
}

/// An output that cannot take the events (`> /dev/full`): one clear line, no panic.
#[test]
fn full_output_is_one_clear_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let (code, err) = trace_until_exit(Stdio::from(full), |_| {});
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("sockbuf: error:") && lines[0].contains("No space left"),
        "{err}"
    );
}

/// Namespaces named `sockbuf-PID` that an older sockbuf left when killed (its process gone)
/// are deleted by the next experiment; one whose process lives is left alone.
#[test]
fn stale_named_namespaces_are_deleted() {
    let dead = "sockbuf-999999999";
    let alive = format!("sockbuf-{}", std::process::id());
    for ns in [dead, alive.as_str()] {
        let ok = Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {ns}");
    }
    let (_, report) = experiment("udp", "udp_report", &[], |_| {});
    assert!(report["netns"].as_str().unwrap().starts_with("/proc/"));
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let _ = Command::new("ip").args(["netns", "del", &alive]).status();
    assert!(!listed.contains(dead), "the stale one deleted: {listed}");
    assert!(listed.contains(&alive), "the live one kept: {listed}");
}

/// The network namespace a running sockbuf holds (`/proc/PID/fd/N` → `net:[…]`).
fn held_netns(pid: u32) -> (u64, u64) {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .expect("fd dir")
        .flatten()
        .find(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("net:["))
        })
        .and_then(|e| netns_inode(e.path()))
        .expect("sockbuf holds its namespace by a file descriptor")
}

/// Sends SIGINT, as Ctrl-C would, and waits for the exit: at once (10 s), not when the
/// experiment would have ended (a minute on); the namespace goes with the process. Not 2 s:
/// under emulation, detaching the programs and ending the session once took longer (6.12,
/// fentry).
fn interrupt(child: &mut std::process::Child, ns: (u64, u64)) -> std::process::ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sockbuf still running 10 s after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_until(Duration::from_secs(5), "the namespace gone", || {
        !netns_alive(ns)
    });
    status
}

#[test]
fn ctrl_c_during_hold_ends_it_at_once() {
    let (mut child, report, ns) = holding_fill();
    let checks = report["checks"].as_object().expect("checks");
    assert!(checks.values().all(|c| c == true), "{report}");
    let status = interrupt(&mut child, ns);
    assert!(status.success(), "the experiment passed: {status}");
}

#[test]
fn ctrl_c_during_the_fill_ends_it_at_once() {
    // The writer sleeps on a full buffer for a minute before the server reads.
    let mut child = Command::new(SOCKBUF)
        .args([
            "fill",
            "--json",
            "--mode",
            "blocking",
            "--read-after",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockbuf fill");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    line_of(&mut lines, "block_start");
    let ns = held_netns(child.id());
    let status = interrupt(&mut child, ns);
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("interrupted before the experiment finished") && err.lines().count() == 1,
        "one line saying so: {err}"
    );
}

/// Whether process `pid` holds a file descriptor of BPF object `kind` (`bpf-map`,
/// `bpf_link`, …: how /proc names their anonymous inodes).
fn holds(pid: u32, kind: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains(kind)))
}

/// `sockbuf trace --json --summary` (started with SIGINT ignored when `ignored`, as a
/// script's background job is), sent SIGINT while its programs load: its first map made,
/// no program attached yet. `None` when that moment was missed (a link already), and it is
/// killed. Not stopped (SIGSTOP) to look: a stop is a pending signal too, and the verifier
/// gives up on one (EAGAIN).
fn interrupted_while_loading(ignored: bool) -> Option<std::process::Child> {
    let mut cmd = if ignored {
        let mut c = Command::new("sh");
        c.args(["-c", "trap '' INT; exec \"$0\" \"$@\"", SOCKBUF]);
        c
    } else {
        Command::new(SOCKBUF)
    };
    let mut child = cmd
        .args(["trace", "--json", "--summary"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockbuf");
    let pid = child.id();
    let t0 = std::time::Instant::now();
    while !holds(pid, "bpf-map") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "sockbuf made no map in 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    if holds(pid, "bpf_link") {
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        return None;
    }
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    Some(child)
}

/// Ctrl-C while the programs still load ends the session as soon as it starts: the start
/// and end lines printed, exit 0. Also when sockbuf inherited SIGINT ignored, as a script's
/// background job does (`sockbuf … & kill -INT $!`): that SIGINT used to be lost, and
/// sockbuf ran on.
#[test]
fn ctrl_c_while_loading_ends_the_session_once_it_starts() {
    for ignored in [false, true] {
        let mut child = (0..10)
            .find_map(|_| interrupted_while_loading(ignored))
            .expect("sockbuf caught while loading in one of 10 tries");
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                child.kill().expect("SIGKILL");
                panic!("sockbuf (SIGINT ignored: {ignored}) still running 60 s after Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = stderr_of(&mut child);
        assert!(
            status.success(),
            "SIGINT ignored: {ignored}: {status}: {err}"
        );
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let kinds: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON")["kind"].clone())
            .collect();
        assert_eq!(kinds.first(), Some(&Value::from("start")), "{out}");
        assert_eq!(kinds.last(), Some(&Value::from("end")), "{out}");
    }
}
