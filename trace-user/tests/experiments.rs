//! The close and UDP experiments, run as a user would (`sockbuf fill --then …`,
//! `sockbuf udp`), their reports checked, and the raw events checked again against the
//! experiment's own counts.

mod common;

use common::*;
use serde_json::Value;

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array().expect("a list").iter().map(u).collect()
}

fn kind<'a>(events: &'a [Value], k: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == k).collect()
}

/// The kernel passes a RST reason to its tracepoint from 6.10 on.
fn kernel_names_rst_reasons() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|x| x.parse::<u32>().unwrap_or(0));
    (v.next().unwrap(), v.next().unwrap()) >= (6, 10)
}

#[test]
fn close_with_unread_data_drops_it_and_resets() {
    let (events, r) = experiment("fill", "fill_report", &["--then", "close-unread"], |_| {});
    let unread = u(&r["server_recv_queue_bytes"]);
    assert!(unread > 0, "the server holds unread data: {r}");
    assert_eq!(u(&r["then"]["unread_at_close_bytes"]), unread, "{r}");
    let sends = kind(&events, "send");
    let client = u(&sends[0]["sock_id"]);
    let closed: Vec<_> = kind(&events, "state")
        .into_iter()
        .filter(|e| e["old_state"] == "ESTABLISHED" && e["state"] == "CLOSE")
        .filter(|e| u(&e["sock_id"]) != client)
        .collect();
    assert_eq!(closed.len(), 1, "the server's close: {closed:?}");
    assert_eq!(
        u(&closed[0]["recv_q"]),
        unread,
        "bytes thrown away at close"
    );
    let server = u(&closed[0]["sock_id"]);
    let rst_out = kind(&events, "rst_out");
    assert_eq!(rst_out.len(), 1, "{rst_out:?}");
    assert_eq!(u(&rst_out[0]["sock_id"]), server);
    let reason = if kernel_names_rst_reasons() {
        "TCP_ABORT_ON_CLOSE"
    } else {
        "UNKNOWN"
    };
    assert_eq!(rst_out[0]["reason"], reason);
    let rst_in = kind(&events, "rst_in");
    assert_eq!(rst_in.len(), 1, "{rst_in:?}");
    assert_eq!(u(&rst_in[0]["sock_id"]), client);
    assert!(u(&rst_in[0]["ts_ns"]) >= u(&closed[0]["ts_ns"]));
    let failed: Vec<_> = sends.iter().filter(|e| e["error"].is_string()).collect();
    let last = failed.last().expect("a failed send");
    assert_eq!(last["error"], "ECONNRESET");
    assert_eq!(r["then"]["client_error"], "ECONNRESET");
}

#[test]
fn close_with_unsent_data_delivers_everything_then_fin() {
    let (events, r) = experiment("fill", "fill_report", &["--then", "close-unsent"], |_| {});
    let accepted = u(&r["accepted_bytes"]);
    let copied: u64 = kind(&events, "send").iter().map(|e| u(&e["copied"])).sum();
    assert_eq!(copied, accepted, "traced copies == the client's count");
    assert_eq!(
        u(&r["then"]["server_read_bytes"]),
        accepted,
        "every byte arrived"
    );
    let queued = u(&r["then"]["queued_at_close_bytes"]);
    assert!(queued > 0, "closed with a queue: {r}");
    let closing: Vec<_> = kind(&events, "state")
        .into_iter()
        .filter(|e| e["state"] == "FIN_WAIT1")
        .collect();
    assert_eq!(closing.len(), 1);
    assert_eq!(u(&closing[0]["send_q"]), queued, "SIOCOUTQ at close");
    let fin_out = kind(&events, "fin_out");
    let client = u(&closing[0]["sock_id"]);
    let client_fin: Vec<_> = fin_out
        .iter()
        .filter(|e| u(&e["sock_id"]) == client)
        .collect();
    // Sent once, or again by a tail-loss probe or timeout when the peer's ACK is slow (as
    // under emulation): every copy at the same place, right after the last byte.
    assert!(!client_fin.is_empty(), "a FIN from the client: {fin_out:?}");
    assert_eq!(
        u(&r["then"]["fin_sends"]),
        client_fin.len() as u64,
        "the report counts them"
    );
    let last_send = kind(&events, "send")
        .into_iter()
        .rfind(|e| u(&e["copied"]) > 0)
        .unwrap();
    for fin in &client_fin {
        assert_eq!(
            u(&fin["seq"]),
            u(&last_send["seq_end"]),
            "the FIN follows the last byte"
        );
    }
    let fin_in: Vec<_> = kind(&events, "fin_in")
        .into_iter()
        .filter(|e| u(&e["sock_id"]) != client)
        .collect();
    assert_eq!(fin_in.len(), 1);
    assert_eq!(u(&fin_in[0]["seq"]), accepted, "data before the FIN");
    let acked = kind(&events, "state")
        .into_iter()
        .find(|e| e["old_state"] == "FIN_WAIT1" && e["state"] == "FIN_WAIT2")
        .expect("the FIN was acked");
    assert_eq!(u(&acked["send_q"]), 0);
    assert_eq!(u(&r["then"]["send_queue_at_fin_ack"]), 0, "the report: {r}");
    assert!(u(&acked["ts_ns"]) >= u(&client_fin[0]["ts_ns"]));
    assert!(u(&client_fin[0]["ts_ns"]) >= u(&closing[0]["ts_ns"]));
}

#[test]
fn udp_datagrams_leave_one_per_send() {
    let (events, r) = experiment(
        "udp",
        "udp_report",
        &["--count", "5", "--size", "700"],
        |_| {},
    );
    let got: Vec<u64> = numbers(&r["received_datagrams"]);
    assert_eq!(got, [700; 5], "the receiver's own count");
    let out: Vec<u64> = kind(&events, "udp_out")
        .iter()
        .map(|e| u(&e["bytes"]))
        .collect();
    assert_eq!(out, got);
    let sends = kind(&events, "udp_send");
    assert_eq!(sends.len(), 5);
    assert!(
        sends
            .iter()
            .all(|e| u(&e["corked"]) == 0 && e["pending"] == false)
    );
    let recvs = kind(&events, "recv");
    let read: u64 = recvs.iter().map(|e| u(&e["copied"])).sum();
    assert_eq!(read, 3500);
    assert_eq!(recvs.last().unwrap()["error"], "EAGAIN");
}

#[test]
fn udp_msg_more_corks_until_the_last_send() {
    let (events, r) = experiment("udp", "udp_report", &["--msg-more"], |_| {});
    let got: Vec<u64> = numbers(&r["received_datagrams"]);
    assert_eq!(got, [4000], "one datagram of the summed size");
    let sends = kind(&events, "udp_send");
    let corked: Vec<u64> = sends.iter().map(|e| u(&e["corked"])).collect();
    assert_eq!(corked, [1000, 2000, 3000, 0]);
    for e in &sends[..3] {
        let flags = e["msg_flags"].as_array().unwrap();
        assert!(flags.contains(&Value::from("MSG_MORE")), "{e}");
        assert_eq!(e["pending"], true);
    }
    let out = kind(&events, "udp_out");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(u(&out[0]["bytes"]), 4000);
    let t = u(&out[0]["ts_ns"]);
    assert!(
        t > u(&sends[2]["ts_ns"]) && t <= u(&sends[3]["ts_ns"]),
        "pushed inside the last send call"
    );
}

#[test]
fn experiment_arguments_are_checked() {
    for (args, says) in [
        (
            &["fill", "--mode", "blocking", "--then", "close-unread"][..],
            "--mode nonblocking",
        ),
        (&["udp", "--msg-more", "--size", "60000"][..], "65507"),
        (&["udp", "--count", "0"][..], "--count"),
    ] {
        let out = std::process::Command::new(SOCKBUF)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
