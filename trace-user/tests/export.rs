//! `sockbuf export`: a real Prometheus server (Debian's, installed by `cargo xtask test`)
//! scrapes it while the test's sockets move known bytes; what Prometheus stored is checked
//! against the sockets' own counts, and the cgroup label against a cgroup the test makes.

mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{
    guard::{Running, ScratchDir},
    metrics::{get, sample, sample_plain},
    *,
};
use serde_json::Value;

/// `sockbuf export ARGS` on a free loopback port, answering; killed when dropped.
struct Exporter {
    run: Running,
    url: String,
}

impl Exporter {
    fn start(args: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let run = Running::spawn(
            Command::new(SOCKBUF)
                .args(["export", "--listen", &addr, "--interval", "300ms"])
                .args(args),
            "sockbuf export",
        );
        let url = format!("http://{addr}/metrics");
        wait_until(Duration::from_secs(30), "sockbuf export to answer", || {
            get(&url).is_some()
        });
        Self { run, url }
    }

    /// The value of the sample named `name` whose labels include all of `labels`.
    fn sample(&self, name: &str, labels: &[&str]) -> Option<f64> {
        sample(&get(&self.url)?, name, labels)
    }
}

/// Writes `total` bytes in `size`-byte writes from a thread named `comm` to a reader on
/// loopback; returns the write calls.
fn move_bytes(comm: &'static str, total: u64, size: usize) -> u64 {
    let (mut c, mut s) = tcp_pair();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0;
        while n < total {
            n += s.read(&mut buf).unwrap() as u64;
        }
    });
    let writer = thread::spawn(move || {
        set_thread_name(comm);
        let mut calls = 0;
        let mut left = total as usize;
        while left > 0 {
            let n = c.write(&vec![1u8; size.min(left)]).unwrap();
            left -= n;
            calls += 1;
            thread::sleep(Duration::from_millis(1));
        }
        calls
    });
    let calls = writer.join().unwrap();
    reader.join().unwrap();
    calls
}

#[test]
fn export_prometheus_stores_what_the_sockets_did() {
    const TOTAL: u64 = 400 * 1000;
    let exporter = Exporter::start(&["-c", "sbexport"]);
    let dir = ScratchDir::new("prometheus");
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let target = exporter
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sockbuf\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Running::spawn(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "prometheus",
    );
    let query = |q: &str| -> Option<f64> {
        let body = get(&format!(
            "http://{prom_addr}/api/v1/query?query={}",
            q.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
        ))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    wait_until(
        Duration::from_secs(30),
        "Prometheus scraping sockbuf",
        || query("up{job=\"sockbuf\"}") == Some(1.0),
    );
    let calls = move_bytes("sbexport", TOTAL, 1000);
    // The exporter's own figures are exact: counted in the kernel.
    wait_until(Duration::from_secs(10), "the exporter's counts", || {
        exporter.sample("sockbuf_send_bytes_total", &["comm=\"sbexport\""]) == Some(TOTAL as f64)
    });
    assert_eq!(
        exporter.sample("sockbuf_send_calls_total", &["comm=\"sbexport\""]),
        Some(calls as f64)
    );
    // What Prometheus stored, within 5 % (it may be a scrape behind).
    let mut last = None;
    wait_until(
        Duration::from_secs(20),
        "Prometheus to store the bytes",
        || {
            last = query("sockbuf_send_bytes_total{comm=\"sbexport\"}");
            last.is_some_and(|v| (v - TOTAL as f64).abs() <= 0.05 * TOTAL as f64)
        },
    );
    let stored_calls = query("sockbuf_send_calls_total{comm=\"sbexport\"}").expect("calls stored");
    assert!(
        (stored_calls - calls as f64).abs() <= 0.05 * calls as f64,
        "Prometheus has {stored_calls} calls, the writer made {calls}"
    );
    assert_eq!(query("sockbuf_lost_events_total"), Some(0.0));
    assert!(query("sockbuf_programs_loaded").is_some_and(|n| n > 0.0));
    // SIGTERM (how a service manager stops it): a clean exit.
    let mut exporter = exporter;
    unsafe { libc::kill(exporter.run.pid() as i32, libc::SIGTERM) };
    let status = exporter.run.0.wait().unwrap();
    assert!(
        status.success(),
        "sockbuf export ended with {status} on SIGTERM"
    );
}

/// A cgroup v2 directory of the test's own (`rel` under the root, made with its parents),
/// removed when dropped, deepest first (its processes gone).
struct Cgroup {
    root: std::path::PathBuf,
    rel: String,
}

impl Cgroup {
    fn new(rel: String) -> Self {
        let root = std::path::PathBuf::from(cgroup2_root());
        std::fs::create_dir_all(root.join(&rel)).expect("a cgroup v2 directory");
        Self { root, rel }
    }

    /// Runs bash, named `comm`, in this cgroup: it writes `total` bytes to a reader of the
    /// test's on loopback and stays a while (its cgroup is read from /proc while it lives);
    /// returns it once the reader has them all. bash writes itself (printf is a builtin); it
    /// waits for a line, so that it is in the cgroup before it connects.
    fn write_from_bash(&self, comm: &str, total: u64) -> std::process::Child {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let reader = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0;
            while n < total {
                match s.read(&mut buf).unwrap() {
                    0 => break,
                    k => n += k as u64,
                }
            }
            n
        });
        let mut writer = Command::new("bash")
            .args([
                "-c",
                &format!(
                    "read; printf {comm} > /proc/$$/comm; exec 3<>/dev/tcp/127.0.0.1/{port}; \
                     printf '%*s' {total} '' >&3; exec 3>&-; sleep 3"
                ),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("bash");
        std::fs::write(
            self.root.join(&self.rel).join("cgroup.procs"),
            writer.id().to_string(),
        )
        .expect("join the cgroup");
        writer.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert_eq!(reader.join().unwrap(), total);
        writer
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let mut dir = self.root.join(&self.rel);
        while dir != self.root {
            let _ = std::fs::remove_dir(&dir);
            dir.pop();
        }
    }
}

#[test]
fn export_labels_a_workload_with_its_cgroup() {
    const TOTAL: u64 = 100_000;
    let name = format!("sockbuf-export-test-{}", std::process::id());
    let cg = Cgroup::new(name.clone());
    let exporter = Exporter::start(&["--group-by", "comm,cgroup", "-c", "sbexport-cg"]);
    let mut writer = cg.write_from_bash("sbexport-cg", TOTAL);
    let labels = [
        "comm=\"sbexport-cg\"".to_owned(),
        format!("cgroup=\"/{name}\""),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    wait_until(Duration::from_secs(10), "the cgroup's series", || {
        exporter.sample("sockbuf_send_bytes_total", &labels) == Some(TOTAL as f64)
    });
    assert!(writer.wait().unwrap().success());
    drop(exporter);
}

/// A pod's cgroups as the kubelet (systemd driver) and containerd name them, and the
/// kubelet's log directory of the pod, both made by the test: the exporter names the pod
/// and its namespace, and the container.
#[test]
fn export_names_a_pod_and_its_container() {
    const TOTAL: u64 = 50_000;
    let uid = format!("5b0c7e2a-9d41-4f3e-8a6b-{:012x}", std::process::id());
    let container = format!("{:064x}", 0xc0ffee_u64 << 32 | std::process::id() as u64);
    let cg = Cgroup::new(format!(
        "sockbuf-export-test-kubepods-{}.slice/kubepods-besteffort.slice/\
         kubepods-besteffort-pod{}.slice/cri-containerd-{container}.scope",
        std::process::id(),
        uid.replace('-', "_")
    ));
    let logs = ScratchDir::new("pod-logs");
    std::fs::create_dir(logs.join(format!("shop_checkout-7d9f8_{uid}"))).unwrap();
    let exporter = Exporter::start(&[
        "--group-by",
        "comm,pod,container",
        "--pod-logs",
        &logs.to_string_lossy(),
        "-c",
        "sbexport-pod",
    ]);
    let mut writer = cg.write_from_bash("sbexport-pod", TOTAL);
    let labels = [
        "comm=\"sbexport-pod\"".to_owned(),
        "namespace=\"shop\"".to_owned(),
        "pod=\"checkout-7d9f8\"".to_owned(),
        format!("container=\"{}\"", &container[..12]),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    wait_until(Duration::from_secs(10), "the pod's series", || {
        exporter.sample("sockbuf_send_bytes_total", &labels) == Some(TOTAL as f64)
    });
    assert!(writer.wait().unwrap().success());
}

#[test]
fn export_on_a_busy_address_is_a_clear_error() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(SOCKBUF)
        .args([
            "export",
            "--listen",
            &busy.local_addr().unwrap().to_string(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--listen") && err.lines().count() == 1,
        "{err}"
    );
}

/// The `le` buckets of histogram `name` with all of `labels`: (bound, cumulative count).
fn buckets(text: &str, name: &str, labels: &[&str]) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix("_bucket{")?;
            let (set, value) = rest.split_once("} ")?;
            let parts: Vec<&str> = set.split(',').collect();
            if !labels.iter().all(|want| parts.contains(want)) {
                return None;
            }
            let le = parts.iter().find_map(|p| p.strip_prefix("le="))?;
            Some((le.trim_matches('"').to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn export_full_times_each_write_and_sleep() {
    let pid = std::process::id().to_string();
    let exporter = Exporter::start(&["--full", "--bpf-stats", "-p", &pid]);
    let calls = move_bytes("sbexportack", 200 * 1000, 1000);
    let who = ["comm=\"sbexportack\""];
    // Every write acked while the connection was up: each one timed, counted exactly.
    wait_until(
        Duration::from_secs(10),
        "every write timed to its ACK",
        || exporter.sample("sockbuf_write_ack_seconds_count", &who) == Some(calls as f64),
    );
    let text = get(&exporter.url).expect("metrics");
    let b = buckets(&text, "sockbuf_write_ack_seconds", &who);
    assert_eq!(
        b.last().map(|(le, n)| (le.as_str(), *n)),
        Some(("+Inf", calls as f64))
    );
    assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {b:?}");

    // A writer that sleeps on a full send buffer: its sleeps, their exact total.
    let (c, mut s) = tcp_pair_with_buffers(4096, 4096);
    let t0 = std::time::Instant::now();
    let writer = thread::spawn(move || {
        set_thread_name("sbexportslp");
        (&c).write_all(&vec![0u8; 256 << 10]).unwrap();
    });
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while n < 256 << 10 {
        thread::sleep(Duration::from_millis(5));
        n += s.read(&mut buf).unwrap();
    }
    writer.join().unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let slept = ["comm=\"sbexportslp\""];
    wait_until(Duration::from_secs(10), "the writer's sleeps", || {
        exporter
            .sample("sockbuf_sleep_seconds_count", &slept)
            .is_some_and(|n| n >= 1.0)
    });
    let sum = exporter
        .sample("sockbuf_sleep_seconds_sum", &slept)
        .unwrap();
    assert!(
        sum > 0.0 && sum <= wall,
        "asleep {sum} s in all, the write took {wall} s"
    );
    // The kernel's run-time accounting, on for the exporter's run.
    let text = get(&exporter.url).expect("metrics");
    let health = |name: &str| sample_plain(&text, name).unwrap_or(0.0);
    assert!(health("sockbuf_bpf_runs_total") >= calls as f64, "{text}");
    assert!(health("sockbuf_bpf_run_seconds_total") > 0.0, "{text}");
    assert_eq!(
        exporter.sample("sockbuf_send_asleep_seconds_total", &slept),
        Some(sum),
        "the counter and the histogram's sum are the same total"
    );
}
