//! iperf3 (Debian's) over loopback, traced with `--port`: the bytes and datagrams iperf3
//! itself reports sent and received (`-J`) equal what sockbuf traced on its data
//! connections, over TCP with `write()`, over TCP with `-Z` (`sendfile()`: pieces tied to
//! their calls) and over UDP; every TCP write is acked.

mod common;

use std::{
    collections::{HashMap, HashSet},
    process::{Command, Stdio},
    time::Duration,
};

use common::{guard::Running, *};
use serde_json::Value;

/// iperf3 writes a 37-byte cookie on each data connection before its data
/// (`COOKIE_SIZE`); its totals leave it out.
const COOKIE: u64 = 37;
/// iperf3 -u opens with a 4-byte datagram each way (`UDP_CONNECT_MSG`/`_REPLY`).
const UDP_HELLO: u64 = 4;
const UDP_LEN: u64 = 1400;

/// An `iperf3 -s -1` (one test, then it exits) on a free port.
struct Server {
    _server: Running,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let port = free_port();
        let server = Running::spawn(
            Command::new("iperf3")
                .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null()),
            "iperf3",
        );
        // Not by connecting: a connection would be the one test it serves.
        wait_until(Duration::from_secs(10), "iperf3 -s to listen", || {
            let ss = Command::new("ss")
                .args(["-Hltn", &format!("sport = :{port}")])
                .output()
                .expect("ss");
            !ss.stdout.is_empty()
        });
        Self {
            _server: server,
            port,
        }
    }
}

/// Runs `iperf3 -c … -J ARGS` against a fresh server under `sockbuf trace --port`; iperf3's
/// report, the traced objects, and the port.
fn traced_run(args: &[&str]) -> (Value, Vec<Value>, u16, u64) {
    let server = Server::start();
    let port = server.port.to_string();
    let trace = Trace::start(&["--port", &port]);
    let out = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port, "-t", "1", "-J"])
        .args(args)
        .output()
        .expect("iperf3 -c");
    assert!(out.status.success(), "iperf3 -c: {out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J");
    // Client, server and sockbuf contend for the CPU: a run the kernel skipped is counted in
    // `missed`, and each check allows for that many calls (see `agrees`).
    let (traced, missed) = trace.stop_counting_missed();
    (report, traced, server.port, missed)
}

/// The largest call iperf3 makes (its TCP block, 128 KiB).
const MAX_CALL: u64 = 128 * 1024;

/// The client's data connections' local ports, as iperf3 reports them.
fn data_ports(report: &Value) -> Vec<u64> {
    report["start"]["connected"]
        .as_array()
        .expect("connected")
        .iter()
        .map(|c| u(&c["local_port"]))
        .collect()
}

/// Traced objects of `kind` on a data connection, from the client's side (`client`: its
/// local port is the data port) or the server's (the remote one is).
fn on_data<'a>(out: &'a [Value], report: &Value, kind: &str, client: bool) -> Vec<&'a Value> {
    let ports = data_ports(report);
    let side = if client { "lport" } else { "rport" };
    out.iter()
        .filter(|e| e["kind"] == kind && ports.contains(&u(&e[side])))
        .collect()
}

fn copied(events: &[&Value]) -> u64 {
    events.iter().map(|e| u(&e["copied"])).sum()
}

fn check_tcp(report: &Value, out: &[Value], syscall: &str, missed: u64) {
    let sent = u(&report["end"]["sum_sent"]["bytes"]);
    let received = u(&report["end"]["sum_received"]["bytes"]);
    let streams = data_ports(report).len() as u64;
    let sends = on_data(out, report, "send", true);
    let recvs = on_data(out, report, "recv", false);
    assert!(sent > 0 && streams > 0, "iperf3 sent nothing: {report}");
    assert_eq!(sends[0]["copied"], COOKIE, "the cookie first: {}", sends[0]);
    agrees(
        copied(&sends),
        sent + COOKIE * streams,
        missed,
        MAX_CALL,
        "bytes sent",
    );
    let data: Vec<&Value> = sends[1..].to_vec();
    assert!(
        data.iter().all(|s| s["syscall"] == syscall),
        "every data send by {syscall}"
    );
    agrees(
        copied(&recvs),
        received + COOKIE * streams,
        missed,
        MAX_CALL,
        "bytes received",
    );
    check_acks(out, &sends, missed);
    eprintln!(
        "iperf3 {syscall}: {sent} B sent in {} kernel sends, {received} B received in {} calls, as iperf3 counted",
        data.len(),
        recvs.len()
    );
}

/// Every write the peer acknowledged has its `ack`; the others are the end line's
/// `unacked`. The server may close a data connection with bytes unread when the time is up
/// (a RST, `TCP_ABORT_ON_CLOSE`): the writes past what it had acknowledged then never are.
fn check_acks(out: &[Value], sends: &[&Value], missed: u64) {
    // Per socket, the highest offset any event showed acknowledged.
    let mut acked_at_end: HashMap<u64, u64> = HashMap::new();
    for e in out {
        if let (Some(id), Some(acked)) = (e["sock_id"].as_u64(), e["acked"].as_u64()) {
            let a = acked_at_end.entry(id).or_default();
            *a = (*a).max(acked);
        }
    }
    let acks: HashSet<(u64, u64)> = out
        .iter()
        .filter(|e| e["kind"] == "ack")
        .map(|e| (u(&e["sock_id"]), u(&e["seq_end"])))
        .collect();
    let (mut never, mut unmatched) = (0, 0);
    for s in sends.iter().filter(|s| u(&s["copied"]) > 0) {
        let (id, seq_end) = (u(&s["sock_id"]), u(&s["seq_end"]));
        if seq_end > acked_at_end.get(&id).copied().unwrap_or(0) {
            never += 1;
        } else if !acks.contains(&(id, seq_end)) {
            unmatched += 1; // acknowledged, its ack event one of the runs skipped
        }
    }
    assert!(
        unmatched <= missed,
        "{unmatched} acknowledged writes without an ack event"
    );
    assert_eq!(
        u(&end(out)["unacked"]),
        never + unmatched,
        "unacked: {}",
        end(out)
    );
}

#[test]
fn iperf3_tcp_bytes_equal_iperf3s_own() {
    let (report, out, _, missed) = traced_run(&[]);
    check_tcp(&report, &out, "write", missed);
}

#[test]
fn iperf3_zerocopy_sendfile_calls_add_up_to_iperf3s_bytes() {
    let (report, out, _, missed) = traced_run(&["-Z"]);
    if has_sendpage() {
        // Documented: before 6.5 sendfile() bypasses tcp_sendmsg; only the cookie is seen.
        let sends = on_data(&out, &report, "send", true);
        assert_eq!(copied(&sends), COOKIE * data_ports(&report).len() as u64);
        assert!(out.iter().all(|e| e["kind"] != "call"));
        return;
    }
    check_tcp(&report, &out, "sendfile", missed);
    // What each sendfile() returned, as iperf3 added it up.
    let ports = data_ports(&report);
    let calls: u64 = out
        .iter()
        .filter(|e| e["kind"] == "call" && ports.contains(&u(&e["lport"])))
        .map(|c| c["ret"].as_i64().unwrap().max(0) as u64)
        .sum();
    agrees(
        calls,
        u(&report["end"]["sum_sent"]["bytes"]),
        missed,
        MAX_CALL,
        "sendfile() results",
    );
}

#[test]
fn iperf3_udp_datagrams_equal_iperf3s_own() {
    let len = UDP_LEN.to_string();
    let (report, out, port, missed) = traced_run(&["-u", "-b", "100M", "-l", &len]);
    let sent = &report["end"]["sum_sent"];
    let received = &report["end"]["sum_received"];
    let sends: Vec<&Value> = on_data(&out, &report, "udp_send", true)
        .into_iter()
        .filter(|e| u(&e["rport"]) == u64::from(port))
        .collect();
    let data: Vec<&&Value> = sends.iter().filter(|s| u(&s["bytes"]) == UDP_LEN).collect();
    assert_eq!(
        sends.len(),
        data.len() + 1,
        "one 4-byte hello, then datagrams"
    );
    assert_eq!(u(&sends[0]["bytes"]), UDP_HELLO);
    agrees(
        data.len() as u64,
        u(&sent["packets"]),
        missed,
        1,
        "datagrams sent",
    );
    agrees(
        data.len() as u64 * UDP_LEN,
        u(&sent["bytes"]),
        missed,
        UDP_LEN,
        "bytes sent",
    );
    // The server reads them on its data socket (connected back to the client's port).
    let reads: Vec<&Value> = on_data(&out, &report, "recv", false)
        .into_iter()
        .filter(|e| e["protocol"] == "udp" && u(&e["copied"]) == UDP_LEN)
        .collect();
    // iperf3's `packets` is the highest sequence number seen: datagrams the receive
    // buffer dropped (an emulated guest's slow reader) are in `lost_packets`.
    agrees(
        reads.len() as u64,
        u(&received["packets"]) - u(&received["lost_packets"]),
        missed,
        1,
        "datagrams read",
    );
    agrees(
        copied(&reads),
        u(&received["bytes"]),
        missed,
        UDP_LEN,
        "bytes read",
    );
    eprintln!(
        "iperf3 udp: {} datagrams sent, {} read, as iperf3 counted",
        data.len(),
        reads.len()
    );
}
