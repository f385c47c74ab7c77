//! `sockbuf fill`, run as a user would, checked against `ss -tmi` taken inside the
//! experiment's namespace while it holds its sockets open.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// A finished `sockbuf fill --json` run.
struct Fill {
    events: Vec<Value>,
    report: Value,
    /// `ss -tmi` inside the namespace, taken while the sockets were held.
    ss: Option<String>,
}

/// Runs `sockbuf fill --json ARGS`; with `hold`, runs `ss -tmi` in its namespace once the
/// report is out.
fn fill(args: &[&str], hold: bool) -> Fill {
    let mut args = args.to_vec();
    if hold {
        // Long enough for `nsenter … ss` to start even in an emulated guest.
        args.extend(["--hold", "5s"]);
    }
    let mut ss = None;
    let (events, report) = experiment("fill", "fill_report", &args, |netns| {
        if !hold {
            return;
        }
        let out = Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["ss", "-tmi"])
            .output()
            .expect("nsenter ss");
        assert!(
            out.status.success(),
            "ss failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ss = Some(String::from_utf8(out.stdout).unwrap());
    });
    Fill { events, report, ss }
}

/// (Recv-Q, Send-Q, skmem) of the established socket whose local address ends in `:port`
/// or (with `peer`) whose peer does.
fn ss_socket(ss: &str, port: u64, peer: bool) -> (u64, u64, String) {
    let lines: Vec<&str> = ss.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"ESTAB") {
            continue;
        }
        let addr = if peer { f[4] } else { f[3] };
        if addr.ends_with(&format!(":{port}")) {
            return (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                lines.get(i + 1).unwrap_or(&"").to_string(),
            );
        }
    }
    panic!("no ESTAB socket with port {port} in:\n{ss}");
}

/// A `skmem` field such as `tb` (send buffer) or `rb` (receive buffer).
fn skmem(detail: &str, key: &str) -> u64 {
    let start = detail.find("skmem:(").expect("skmem") + 7;
    let inner = &detail[start..detail[start..].find(')').unwrap() + start];
    inner
        .split(',')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {key} in {inner}"))
}

/// The report agrees with `ss` on the client's Send-Q, the server's Recv-Q and the buffers.
fn agrees_with_ss(f: &Fill) {
    let r = &f.report;
    let ss = f.ss.as_deref().expect("ss output");
    let send = f
        .events
        .iter()
        .find(|e| e["kind"] == "send")
        .expect("a traced send");
    let server_port = u(&send["rport"]);
    let (_, client_sendq, client_mem) = ss_socket(ss, server_port, true);
    let (server_recvq, _, server_mem) = ss_socket(ss, server_port, false);
    assert_eq!(
        client_sendq,
        u(&r["client_send_queue_bytes"]),
        "ss Send-Q of the client\n{ss}"
    );
    assert_eq!(
        server_recvq,
        u(&r["server_recv_queue_bytes"]),
        "ss Recv-Q of the server\n{ss}"
    );
    assert_eq!(
        skmem(&client_mem, "tb"),
        u(&r["sndbuf"]),
        "ss send buffer\n{ss}"
    );
    assert_eq!(
        skmem(&server_mem, "rb"),
        u(&r["rcvbuf"]),
        "ss receive buffer\n{ss}"
    );
    assert_eq!(u(&r["accepted_bytes"]), client_sendq + server_recvq);
}

fn small_buffers(chunk: &str) -> Vec<&str> {
    // 1-byte writes into autotuned megabyte buffers would take millions of calls.
    if chunk == "1" {
        vec!["--sndbuf", "4096", "--rcvbuf", "4096"]
    } else {
        vec![]
    }
}

#[test]
fn nonblocking_fill_with_chunks_1_1024_65536() {
    for chunk in ["1", "1024", "65536"] {
        let mut args = vec!["--chunk", chunk];
        args.extend(small_buffers(chunk));
        let f = fill(&args, true);
        let r = &f.report;
        assert_eq!(r["mode"], "nonblocking");
        assert_eq!(u(&r["chunk"]), chunk.parse::<u64>().unwrap());
        assert!(
            u(&r["eagain_count"]) >= 2,
            "stops on an EAGAIN that persists: {r}"
        );
        let sends: Vec<_> = f.events.iter().filter(|e| e["kind"] == "send").collect();
        assert_eq!(sends.len() as u64, u(&r["write_calls"]));
        assert!(
            sends.iter().all(|e| u(&e["requested"]) == u(&r["chunk"])),
            "every call asks for one chunk"
        );
        agrees_with_ss(&f);
        assert_eq!(
            u(&r["at_least_in_client_send_buffer"]),
            u(&r["accepted_bytes"]) - u(&r["last_ack_bytes"])
        );
    }
}

#[test]
fn blocking_fill_with_chunks_1_1024_65536() {
    for chunk in ["1", "1024", "65536"] {
        let mut args = vec![
            "--mode",
            "blocking",
            "--chunk",
            chunk,
            "--read-after",
            "400ms",
        ];
        args.extend(small_buffers(chunk));
        let f = fill(&args, false);
        let r = &f.report;
        assert_eq!(r["mode"], "blocking");
        assert_eq!(u(&r["eagain_count"]), 0);
        // The report's sleep is the one the experiment measured: the writer's last before
        // the server read. A delayed ACK may wake it for a last copy during --read-after, so
        // that sleep can start inside the wait: it lasts at least as long as the server
        // waited after it began, not the whole --read-after.
        let blocks: Vec<_> = f.events.iter().filter(|e| e["kind"] == "block").collect();
        let measured = blocks
            .iter()
            .find(|e| e["duration_ns"] == r["blocked_ns"])
            .unwrap_or_else(|| panic!("the report's block is a traced one: {r}"));
        assert!(u(&r["server_wait_ns"]) > 0, "{r}");
        assert!(
            u(&measured["duration_ns"]) >= u(&r["server_wait_ns"]),
            "the writer slept at least as long as the server waited: {measured} {r}"
        );
        assert_eq!(u(&r["server_read_bytes"]), u(&r["written_bytes"]));
    }
}

#[test]
fn tcp_wmem_applies_in_the_namespace_only() {
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    let default = fill(&[], false).report;
    let small = fill(&["--tcp-wmem", "4096 16384 1048576"], false).report;
    let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    assert_eq!(host_before, host_after, "the host's tcp_wmem is untouched");
    assert_eq!(small["tcp_wmem"], serde_json::json!([4096, 16384, 1048576]));
    assert!(u(&small["sndbuf"]) <= 1_048_576, "{small}");
    assert!(
        u(&small["accepted_bytes"]) < u(&default["accepted_bytes"]),
        "a smaller tcp_wmem max accepts less: {} vs {}",
        small["accepted_bytes"],
        default["accepted_bytes"]
    );
}

#[test]
fn plot_is_well_formed_svg_with_every_series() {
    let path = std::env::temp_dir().join(format!("sockbuf-fill-{}.svg", std::process::id()));
    let p = path.to_str().unwrap();
    fill(
        &["--mode", "blocking", "--read-after", "200ms", "--plot", p],
        false,
    );
    let svg = std::fs::read_to_string(&path).expect("the SVG was written");
    std::fs::remove_file(&path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    for series in [
        "client send queue (Send-Q)",
        "server receive queue (Recv-Q)",
        "client sk_sndbuf",
        "write calls",
        "EAGAIN",
        "writer asleep",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(series)),
            "legend lacks {series:?}"
        );
    }
    let polylines = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .count();
    assert!(polylines >= 3, "the queue and sndbuf lines are drawn");
}
