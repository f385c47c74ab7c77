//! Writes followed at once by `shutdown(SHUT_WR)` or `close()`, as servers end a response:
//! the ACKs that prove the tail delivered arrive after the connection left ESTABLISHED,
//! where no backend's ACK hook runs. Every write of a connection whose peer read everything
//! must still be acked, settled by the state change that proves it.

mod common;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    thread,
    time::Duration,
};

use common::{summary::SummaryRun, *};
use serde_json::Value;

const TOTAL: usize = 3 << 20;
const CHUNK: usize = 64 << 10;

/// Writes [`TOTAL`] bytes in [`CHUNK`]s to a peer that reads until EOF; `end` ends the
/// writer's side right after the last write. Returns the writer's inode and the bytes the
/// peer read.
fn write_then(end: impl FnOnce(TcpStream)) -> (u64, u64) {
    let (mut c, mut s) = tcp_pair();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf).expect("peer read") {
                0 => return n, // the writer's FIN
                k => n += k as u64,
            }
        }
    });
    let chunk = vec![5u8; CHUNK];
    for _ in 0..TOTAL / CHUNK {
        c.write_all(&chunk).expect("write");
    }
    let ino = ino(&c);
    end(c);
    (ino, reader.join().expect("reader"))
}

/// Every send event of socket `ino` has its ack, in stream order, the last one at the
/// stream's end; returns how many the state settled.
fn assert_all_acked(out: &[Value], ino: u64) -> usize {
    let sends = events(out, "send", ino);
    let acks = events(out, "ack", ino);
    let copied: u64 = sends.iter().map(|s| u(&s["copied"])).sum();
    assert_eq!(copied, TOTAL as u64, "the traced sends copied every byte");
    assert_eq!(
        acks.len(),
        sends.len(),
        "one ack per write, shutdown or close included: {}",
        end(out)
    );
    for (s, a) in sends.iter().zip(&acks) {
        assert_eq!(s["seq_end"], a["seq_end"], "acks in stream order: {a}");
        let by = a["settled_by"].as_str().expect("settled_by");
        assert!(by == "ack" || by == "state", "{a}");
    }
    let span = u(&sends.last().unwrap()["seq_end"]) - u(&sends[0]["seq_start"]);
    assert_eq!(span, TOTAL as u64, "the writes tile the stream to its end");
    assert_eq!(end(out)["unacked"], 0, "{}", end(out));
    acks.iter().filter(|a| a["settled_by"] == "state").count()
}

#[test]
fn writes_then_shutdown_are_all_acked() {
    let pid = std::process::id().to_string();
    let trace = Trace::start(&["-p", &pid]);
    let mut kept = None;
    let (ino, read) = write_then(|c| {
        c.shutdown(Shutdown::Write).expect("shutdown");
        kept = Some(c);
    });
    assert_eq!(read, TOTAL as u64, "the peer read everything");
    let mut c = kept.unwrap();
    // The kernel's own word: nothing left unacknowledged (the FIN included).
    wait_until(
        std::time::Duration::from_secs(5),
        "tcpi_unacked == 0",
        || tcp_info(&c).tcpi_unacked == 0,
    );
    // The peer closed after reading: its FIN reaches the writer in FIN_WAIT2.
    assert_eq!(c.read(&mut [0u8; 16]).expect("read"), 0, "the peer's FIN");
    let out = trace.stop();
    let by_state = assert_all_acked(&out, ino);
    eprintln!("shutdown: {by_state} writes settled by the state");
    let fins = events(&out, "fin_in", ino);
    assert_eq!(
        fins.len(),
        1,
        "the FIN reaching the side that shut first: {fins:?}"
    );
    assert_eq!(u(&fins[0]["seq"]), 0, "no data before it: {}", fins[0]);
}

#[test]
fn writes_then_close_are_all_acked() {
    let pid = std::process::id().to_string();
    let trace = Trace::start(&["-p", &pid]);
    let (ino, read) = write_then(drop);
    assert_eq!(read, TOTAL as u64, "the peer read everything");
    // The reader's socket closes when its thread ends: the writer's side then reaches
    // TIME_WAIT, and its CLOSE settles whatever was still waiting.
    let out = trace.stop();
    let closes: Vec<&Value> = events(&out, "state", ino)
        .into_iter()
        .filter(|e| e["state"] == "CLOSE")
        .collect();
    assert_eq!(closes.len(), 1, "the writer's socket reached CLOSE");
    let by_state = assert_all_acked(&out, ino);
    eprintln!("close: {by_state} writes settled by the state");
}

/// `ss`'s line for the TCP socket on local port `port` in `state`, with its timer (`-o`): a
/// time-wait socket shows its substate (`fin-wait-2` before the peer's FIN, `time-wait`
/// after) and the timer `timewait`; an orphaned full socket its own timer.
fn ss_line(state: &str, port: u16) -> String {
    let out = std::process::Command::new("ss")
        .args([
            "-H",
            "-tano",
            "state",
            state,
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("run ss");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The peer's FIN reaching a socket that `close()` orphaned after it had turned time-wait,
/// where the function backends hook and no tracepoint runs (docs/limits.md). Streamed as
/// `fin_in` after the peer's 777 bytes, and counted in `--summary --full`.
///
/// `shutdown(SHUT_WR)` first, so that `close()` finds the socket in FIN_WAIT2 and turns it
/// time-wait at once: after a bare `close()` the ACK of its FIN can reach the socket while
/// `close()` still holds its lock, and the kernel then keeps the full socket in FIN_WAIT2,
/// where the peer's FIN is an ordinary one (seen on 6.12).
#[test]
fn fin_reaching_an_orphaned_socket_in_time_wait() {
    const REPLY: usize = 777;
    const FIN_WAIT2: u8 = 5;
    let pid = std::process::id().to_string();
    let run = || {
        let (mut c, mut s) = tcp_pair();
        let (ino, port) = (ino(&c), c.local_addr().unwrap().port());
        s.write_all(&[1u8; REPLY]).expect("reply");
        c.read_exact(&mut [0u8; REPLY]).expect("read the reply");
        c.shutdown(Shutdown::Write).expect("shutdown");
        assert_eq!(s.read(&mut [0u8; 16]).expect("read"), 0, "the client's FIN");
        wait_until(Duration::from_secs(5), "the client in FIN_WAIT2", || {
            tcp_info(&c).tcpi_state == FIN_WAIT2
        });
        drop(c); // orphaned, and time-wait at once
        let line = ss_line("fin-wait-2", port);
        assert!(
            line.contains("timewait"),
            "the client is a time-wait socket: {line:?}"
        );
        drop(s); // the server's FIN, to the time-wait socket
        wait_until(Duration::from_secs(5), "the client in TIME_WAIT", || {
            !ss_line("time-wait", port).is_empty()
        });
        ino
    };
    let trace = Trace::start(&["-p", &pid]);
    let attach = trace.start["attach"].as_str().unwrap().to_owned();
    let ino = run();
    let out = trace.stop();
    let fins = events(&out, "fin_in", ino);
    if tracepoints_only(&attach) {
        assert!(fins.is_empty(), "no tracepoint sees it: {fins:?}");
        return;
    }
    assert_eq!(fins.len(), 1, "the server's FIN: {fins:?}");
    assert_eq!(
        u(&fins[0]["seq"]),
        REPLY as u64,
        "after the reply: {}",
        fins[0]
    );
    assert_eq!(fins[0]["state"], "TIME_WAIT", "{}", fins[0]);

    let summary = SummaryRun::start(&["-p", &pid, "--full", "--top", "100"]);
    let ino = run();
    let (rows, end) = summary.stop();
    let row = rows
        .iter()
        .find(|r| u(&r["sock_id"]) == ino)
        .unwrap_or_else(|| panic!("no row of the client: {rows:?}"));
    assert_eq!(u(&row["fin_received"]), 1, "{row}");
    assert_eq!(u(&end["faults"]), 0, "{end}");
}
