//! A real server sockbuf's users run: redis-server (Debian's, installed by `cargo xtask
//! test`'s set-up) under redis-benchmark. Accepted sockets keep one identity from their
//! first event, `--summary`'s rows equal what streaming saw of the same connections socket by
//! socket, and nothing faults or is overstated.

mod common;

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{
    guard::{Running, ScratchDir},
    summary::SummaryRun,
    *,
};
use serde_json::Value;

/// A redis-server of the test's own on a free loopback port, stopped when dropped.
struct Redis {
    server: Running,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = free_port();
        let server = Running::spawn(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdout(Stdio::null()),
            "redis-server",
        );
        let r = Self { server, port };
        wait_until(Duration::from_secs(10), "redis-server to answer", || {
            Command::new("redis-cli")
                .args(["-p", &port.to_string(), "ping"])
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        });
        r
    }

    /// Runs `redis-benchmark -P 16` of SET and GET: `requests` each, on `clients`
    /// connections.
    fn bench(&self, requests: u32, clients: u32) {
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &self.port.to_string(),
                "-P",
                "16",
                "-t",
                "set,get",
                "-q",
            ])
            .args(["-n", &requests.to_string(), "-c", &clients.to_string()])
            .output()
            .expect("redis-benchmark");
        assert!(out.status.success(), "redis-benchmark: {out:?}");
    }
}

/// (send calls, bytes copied, receive calls, bytes read) of a socket.
type Calls = (u64, u64, u64, u64);

/// Per inode, from streamed send and recv events.
fn streamed_calls(out: &[Value]) -> HashMap<u64, Calls> {
    let mut by_ino: HashMap<u64, Calls> = HashMap::new();
    for e in out {
        let send = match e["kind"].as_str() {
            Some("send") => true,
            Some("recv") => false,
            _ => continue,
        };
        let c = by_ino.entry(u(&e["ino"])).or_default();
        if send {
            (c.0, c.1) = (c.0 + 1, c.1 + u(&e["copied"]));
        } else {
            (c.2, c.3) = (c.2 + 1, c.3 + u(&e["copied"]));
        }
    }
    by_ino
}

#[test]
fn redis_benchmark_rows_equal_the_streamed_calls_socket_by_socket() {
    let redis = Redis::start();
    let port = redis.port.to_string();
    // Both at once, on the same connections: every row kept (--top), all sockets filtered
    // by port (so the server's are met at their handshake, before accept()).
    let summary = SummaryRun::start(&["--port", &port, "--top", "100000"]);
    let stream = Trace::start(&["--port", &port]);
    redis.bench(4000, 20);
    thread::sleep(Duration::from_millis(300));
    let out = stream.stop();
    let (summary, end) = summary.stop_whole();
    drop(redis);
    let rows = summary["sockets"].as_array().expect("sockets");
    assert_eq!(u(&end["faults"]), 0, "{end}");
    assert_eq!(
        u(&summary["overflow"]["calls_streamed_by_kernel"]),
        0,
        "{}",
        summary["overflow"]
    );
    let streamed = streamed_calls(&out);
    let mut servers = 0;
    for row in rows {
        let id = u(&row["sock_id"]);
        assert_ne!(id, 0, "every socket has its own id: {row}");
        let ino = u(&row["ino"]);
        if row["comm"] == "redis-server" && u(&row["sends"]) > 0 {
            servers += 1;
            assert!(
                id == ino || id >= 1 << 40,
                "a server socket's id is its inode or sockbuf's own: {row}"
            );
        }
        if u(&row["sends"]) + u(&row["recvs"]) == 0 {
            continue; // the listener, or a connection no call was made on
        }
        let got = (
            u(&row["sends"]),
            u(&row["copied_bytes"]),
            u(&row["recvs"]),
            u(&row["received_bytes"]),
        );
        assert_eq!(
            streamed.get(&ino).copied().unwrap_or_default(),
            got,
            "socket {id} (ino {ino}): streamed vs summary (sends, copied, recvs, read): {row}"
        );
        assert_eq!(
            u(&row["dropped_unread_bytes"]),
            0,
            "redis-benchmark's connections close in order, nothing unread is thrown away: {row}"
        );
    }
    // redis-benchmark opens its 20 clients for each of the two tests.
    assert!(
        servers >= 40,
        "{servers} server sockets with sends: {rows:?}"
    );
    let t = &summary["totals"];
    let streamed_total = streamed.values().fold((0, 0, 0, 0), |a, c| {
        (a.0 + c.0, a.1 + c.1, a.2 + c.2, a.3 + c.3)
    });
    assert_eq!(
        (
            u(&t["sends"]),
            u(&t["copied_bytes"]),
            u(&t["recvs"]),
            u(&t["received_bytes"])
        ),
        streamed_total,
        "totals: {t}"
    );
}

#[test]
fn redis_benchmark_calls_equal_strace() {
    let redis = Redis::start();
    let pid = redis.server.pid();
    let dir = ScratchDir::new("redis");
    let strace = strace::Attached::to(pid, "read,write,writev", dir.join("strace.log"));
    let trace = Trace::start(&["-p", &pid.to_string()]);
    redis.bench(2000, 10);
    thread::sleep(Duration::from_millis(300));
    let out = trace.stop();
    let calls = strace.stop();
    // redis-server's socket calls, as strace saw them and as sockbuf did.
    let reads = strace::results(&calls, "read");
    let traced = |kind: &str| -> Vec<i64> {
        out.iter()
            .filter(|e| e["kind"] == kind && e["family"].is_string())
            .map(|e| e["ret"].as_i64().unwrap())
            .collect()
    };
    // redis-server does its socket I/O on one thread (io-threads 1): the same order.
    let writes: Vec<i64> = calls
        .iter()
        .filter(|c| c.tcp && (c.name == "write" || c.name == "writev"))
        .map(|c| c.ret)
        .collect();
    assert_eq!(traced("send"), writes, "send calls: sockbuf vs strace");
    assert_eq!(traced("recv"), reads, "receive calls: sockbuf vs strace");
    eprintln!(
        "redis: {} write/writev and {} read calls on sockets ({} B, {} B), equal to strace",
        writes.len(),
        reads.len(),
        writes.iter().filter(|r| **r > 0).sum::<i64>(),
        reads.iter().filter(|r| **r > 0).sum::<i64>()
    );
}
