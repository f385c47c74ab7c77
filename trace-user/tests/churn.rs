//! Connection churn: thousands of short connections a second for half a minute under
//! `--summary`, `--summary --full` and streaming. Every call is counted, nothing faults, and
//! sockbuf's memory and the kernel's per-socket maps stay flat: a closed socket's state is
//! freed (folded into its group) when it closes.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{summary::SummaryRun, *};
use serde_json::Value;

const PAYLOAD: usize = 100;
/// How long the churn runs: 30 s, or `SOCKBUF_CHURN_SECS` (BENCHMARKS.md's 10-minute run).
fn secs() -> u64 {
    std::env::var("SOCKBUF_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}
/// The rate the test must reach, or it proves nothing about churn.
const MIN_PER_SEC: u64 = 5_000;
/// Client threads (one alone makes a little under 5 000 a second here, traced), and the
/// connections each makes a second.
const CLIENTS: usize = 2;
const PER_CLIENT: u64 = 3_500;

/// What the churn's own threads did.
struct Churned {
    conns: u64,
    /// Read calls on both ends (the client's one read sees the server's close).
    reads: u64,
}

/// A listener whose connections churn: a client thread connects, writes 100 B and waits for
/// the server's close, as fast as it can; a server thread accepts each connection, reads the
/// 100 B and closes.
struct Churn {
    listener: TcpListener,
}

impl Churn {
    fn bind() -> Self {
        Self {
            listener: TcpListener::bind("127.0.0.1:0").expect("bind"),
        }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// Churns for [`secs`], calling `sample` every 5 s.
    fn run(self, mut sample: impl FnMut()) -> Churned {
        let addr = self.listener.local_addr().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        // The server closes first, so the TIME_WAIT sockets are the server's and the
        // clients' ephemeral ports stay free.
        let server = {
            let (l, done) = (self.listener, done.clone());
            thread::spawn(move || {
                let mut reads = 0;
                let mut buf = [0u8; PAYLOAD];
                for s in l.incoming() {
                    let mut s = s.expect("accept");
                    if done.load(Ordering::SeqCst) {
                        return reads; // the wake-up connection
                    }
                    let mut got = 0;
                    while got < PAYLOAD {
                        reads += 1;
                        got += s.read(&mut buf[got..]).expect("server read");
                    }
                }
                reads
            })
        };
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let (mut conns, mut reads) = (0, 0);
                    let mut buf = [0u8; 16];
                    let t0 = Instant::now();
                    while !stop.load(Ordering::SeqCst) {
                        // Paced: the rate the test asks for, with room to spare, not the
                        // most two threads can do (sockbuf must keep up, not the test).
                        let due = Duration::from_micros(conns * 1_000_000 / PER_CLIENT);
                        if let Some(wait) = due.checked_sub(t0.elapsed()) {
                            thread::sleep(wait);
                        }
                        let mut c = TcpStream::connect(addr).expect("connect");
                        assert_eq!(c.write(&[1u8; PAYLOAD]).expect("write"), PAYLOAD);
                        // Returns once the server read everything and closed.
                        reads += 1;
                        assert_eq!(c.read(&mut buf).expect("client read"), 0, "EOF");
                        conns += 1;
                    }
                    (conns, reads)
                })
            })
            .collect();
        let t0 = Instant::now();
        for k in 1..=secs() / 5 {
            thread::sleep(Duration::from_secs(5 * k).saturating_sub(t0.elapsed()));
            sample();
        }
        stop.store(true, Ordering::SeqCst);
        let (mut conns, mut client_reads) = (0, 0);
        for c in clients {
            let (n, r) = c.join().expect("client");
            (conns, client_reads) = (conns + n, client_reads + r);
        }
        // Every connection was served (each client waited for the server's close): one more
        // wakes the server to end. It counts as a connection without data.
        done.store(true, Ordering::SeqCst);
        drop(TcpStream::connect(addr).expect("connect"));
        let server_reads = server.join().expect("server");
        let per_sec = conns / secs();
        assert!(
            per_sec >= MIN_PER_SEC,
            "the churn made only {per_sec} connections a second (wanted {MIN_PER_SEC})"
        );
        // Let the last connections reach CLOSE on both sides.
        thread::sleep(Duration::from_millis(300));
        Churned {
            conns,
            reads: server_reads + client_reads,
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Entries of sockbuf's map `name` now (bpftool's dump).
fn map_entries(name: &str) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "name", name])
        .output()
        .expect("bpftool (installed by cargo xtask test's set-up)");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool map dump {name}: {e}: {:?}", out));
    v.as_array().map_or(0, Vec::len)
}

/// RSS after warm-up stays within 20 % of its value at 5 s; AGG never holds more than the
/// sockets allowed (`--max-sockets`, preallocated).
fn assert_flat(samples: &[(u64, usize)], what: &str) {
    let at5 = samples[0].0;
    for &(rss, agg) in samples {
        assert!(
            rss <= at5 + at5 / 5,
            "{what}: RSS grew from {at5} KiB at 5 s to {rss} KiB: {samples:?}"
        );
        assert!(
            agg <= MAX_SOCKETS,
            "{what}: AGG held {agg} sockets: {samples:?}"
        );
    }
}

/// `--max-sockets`'s default: the churn has a few sockets open at a time, and sockbuf may
/// be a few hundred milliseconds behind the closes.
const MAX_SOCKETS: usize = 8192;

/// Samples sockbuf's RSS (KiB) and the AGG map's entries.
fn sampler(pid: u32, samples: &mut Vec<(u64, usize)>) -> impl FnMut() + '_ {
    move || samples.push((rss_kib(pid), map_entries("AGG")))
}

/// `--summary` (and `--full`) over the churn: every call counted exactly, in the totals,
/// with no fault; rows, groups and memory bounded.
fn summary_churn(full: bool) {
    let churn = Churn::bind();
    let port = churn.port().to_string();
    let mut args = vec!["--port", port.as_str()];
    if full {
        args.push("--full");
    }
    let run = SummaryRun::start(&args);
    let mut samples = Vec::new();
    let done = churn.run(sampler(run.child.id(), &mut samples));
    // Once sockbuf has read the last CLOSE, the kernel holds no closed socket's counts.
    let t0 = Instant::now();
    let mut agg_after = map_entries("AGG");
    while agg_after > 2 && t0.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(100));
        agg_after = map_entries("AGG");
    }
    let (summary, end) = run.stop_whole();
    let what = if full {
        "--summary --full"
    } else {
        "--summary"
    };
    eprintln!(
        "{what}: {} connections ({} a second), samples (RSS KiB, AGG entries) every 5 s: {samples:?}; overflow {}",
        done.conns,
        done.conns / secs(),
        summary["overflow"]
    );
    let t = &summary["totals"];
    assert_eq!(u(&t["sends"]), done.conns, "one send per connection: {t}");
    assert_eq!(u(&t["copied_bytes"]), done.conns * PAYLOAD as u64);
    assert_eq!(u(&t["recvs"]), done.reads, "{t}");
    assert_eq!(u(&t["received_bytes"]), done.conns * PAYLOAD as u64);
    assert_eq!(u(&end["missed"]), 0, "{end}");
    assert_eq!(u(&end["lost"]), 0, "{end}");
    // A CLOSE sockbuf never saw leaves its socket's counts in the kernel, and its row live.
    let live: Vec<&Value> = summary["sockets"]
        .as_array()
        .expect("sockets")
        .iter()
        .filter(|r| r["closed"] == false)
        .collect();
    assert!(
        agg_after <= 2,
        "AGG still holds {agg_after} entries 10 s after the churn; live rows: {live:?}"
    );
    let overflow = &summary["overflow"];
    assert_eq!(
        u(&overflow["calls_streamed_by_kernel"]),
        0,
        "AGG always had room: {overflow}"
    );
    // About 2 in a million state changes are still neither seen nor counted missed (10
    // minutes: 7 sockets of 8.4 million; BENCHMARKS.md); their sockets are closed when a new
    // socket takes their memory. More than 10 in a million is a regression (the first form
    // of the standby copies lost 20).
    let inferred = u(&overflow["closes_inferred"]);
    assert!(
        inferred * 100_000 <= done.conns,
        "{inferred} CLOSEs not seen (inferred from a socket's memory reused): {overflow}"
    );
    // Both ends of every connection, the test's last one, and the listener (its CLOSE may
    // come after sockbuf stops).
    let closed = u(&summary["closed_sockets"]);
    assert!(
        (2 * done.conns..=2 * (done.conns + 1) + 1).contains(&closed),
        "{closed} sockets closed for {} connections: {}",
        done.conns,
        summary["overflow"]
    );
    let rows = summary["sockets"].as_array().expect("sockets").len();
    assert!(
        rows <= 20 + 8,
        "{rows} rows: the top 20 closed and the few live"
    );
    // One group per side, named by the service's port and the test's threads (the last
    // connection, which no task read or wrote, has no command: a group of its own).
    let groups = summary["groups"].as_array().expect("groups");
    let big: Vec<&Value> = groups
        .iter()
        .filter(|g| u(&g["sockets"]) > done.conns / 2)
        .collect();
    assert_eq!(
        big.len(),
        2,
        "client and server, one group each: {groups:?}"
    );
    assert_ne!(big[0]["side"], big[1]["side"], "{groups:?}");
    assert_eq!(big[0]["comm"], big[1]["comm"], "{groups:?}");
    for g in &big {
        assert_eq!(g["port"], churn_port(&port), "{g}");
    }
    for g in groups {
        assert_eq!(
            u(&g["dropped_unread_bytes"]),
            0,
            "an orderly close drops nothing: {g}"
        );
    }
    if full {
        assert_eq!(
            u(&t["acked_writes"]) + u(&t["untimed_writes"]) + u(&end["unacked"]),
            done.conns,
            "every write acked, untimed or unacked: {t} {end}"
        );
    }
    assert_flat(&samples, what);
}

fn churn_port(port: &str) -> u64 {
    port.parse().unwrap()
}

/// Kills a sockbuf left running by a failed test.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

#[test]
fn summary_under_churn_counts_every_call_in_flat_memory() {
    summary_churn(false);
}

#[test]
fn full_summary_under_churn_counts_every_call_in_flat_memory() {
    summary_churn(true);
}

/// Streaming over the churn: every send arrives, nothing lost, and sockbuf's memory stays
/// flat (what it keeps per socket goes when the socket closes).
#[test]
fn streaming_under_churn_keeps_flat_memory() {
    let churn = Churn::bind();
    let port = churn.port().to_string();
    let mut child = Command::new(SOCKBUF)
        .args(["trace", "--json", "--port", &port])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sockbuf");
    let pid = child.id();
    let _guard = KillOnDrop(pid);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let start = lines.next().expect("start line").expect("read");
    assert!(start.contains("\"start\""), "{start}");
    // Counted as they stream: sends, and the end line.
    let reader = thread::spawn(move || {
        let (mut sends, mut end) = (0u64, Value::Null);
        for line in lines {
            let line = line.expect("read");
            if line.starts_with("{\"kind\":\"send\"") {
                sends += 1;
            } else if line.starts_with("{\"kind\":\"end\"") {
                end = serde_json::from_str(&line).expect("end JSON");
            }
        }
        (sends, end)
    });
    let mut samples = Vec::new();
    let done = churn.run(|| samples.push((rss_kib(pid), 0)));
    thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    assert!(child.wait().expect("wait").success());
    let (sends, end) = reader.join().expect("reader");
    eprintln!(
        "streaming: {} connections, RSS KiB every 5 s: {samples:?}",
        done.conns
    );
    assert_eq!(u(&end["lost"]), 0, "{end}");
    assert_eq!(u(&end["faults"]), 0, "{end}");
    assert_eq!(u(&end["missed"]), 0, "{end}");
    assert_eq!(sends, done.conns, "one send event per connection: {end}");
    assert_flat(&samples, "streaming");
}

/// The sum over every series of `name` in OpenMetrics text `text`.
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `sockbuf export` over the churn: its counters add up to every call, with no series per
/// connection, and its memory and the kernel's maps stay flat.
#[test]
fn export_under_churn_counts_every_call_in_flat_memory() {
    let churn = Churn::bind();
    let port = churn.port().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(SOCKBUF)
        .args([
            "export",
            "--listen",
            &addr,
            "--interval",
            "500ms",
            "--port",
            &port,
        ])
        .spawn()
        .expect("spawn sockbuf export");
    let pid = child.id();
    let _guard = KillOnDrop(pid);
    let url = format!("http://{addr}/metrics");
    let scrape = || {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "2", &url])
            .output()
            .expect("curl");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    wait_until(Duration::from_secs(30), "sockbuf export to answer", || {
        scrape().is_some()
    });
    let mut samples = Vec::new();
    let done = churn.run(sampler(pid, &mut samples));
    let bytes = done.conns * PAYLOAD as u64;
    // The counters are a snapshot at most one interval old: the clients' last reads (of
    // the server's close) come after every byte, so wait for them as well as for the bytes
    // (a count past its mark is still found by the exact checks below).
    let mut text = String::new();
    wait_until(
        Duration::from_secs(10),
        "every call in the counters",
        || {
            text = scrape().unwrap_or_default();
            metric_sum(&text, "sockbuf_send_bytes_total") >= bytes
                && metric_sum(&text, "sockbuf_recv_calls_total") >= done.reads
        },
    );
    assert_eq!(metric_sum(&text, "sockbuf_send_bytes_total"), bytes);
    eprintln!(
        "export: {} connections, samples (RSS KiB, AGG entries) every 5 s: {samples:?}",
        done.conns
    );
    assert_eq!(metric_sum(&text, "sockbuf_send_calls_total"), done.conns);
    assert_eq!(metric_sum(&text, "sockbuf_recv_bytes_total"), bytes);
    assert_eq!(metric_sum(&text, "sockbuf_recv_calls_total"), done.reads);
    assert_eq!(metric_sum(&text, "sockbuf_lost_events_total"), 0);
    assert_eq!(metric_sum(&text, "sockbuf_missed_runs_total"), 0);
    let series = text
        .lines()
        .filter(|l| l.starts_with("sockbuf_send_bytes_total{"))
        .count();
    assert!(
        series <= 3,
        "{series} series of sent bytes: by comm and container, not per connection"
    );
    assert_flat(&samples, "export");
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(child.wait().expect("wait").success());
}
