//! A real writer blocked by a slow reader: coreutils' `cat` copies a file into a TCP
//! connection (bash's `/dev/tcp`, blocking writes of 128 KiB) whose reader drains it slowly,
//! under `strace -T` and sockbuf at once. Each write the reader held up sleeps in the
//! kernel; the time sockbuf saw it asleep agrees with the call's duration as strace timed
//! it, within 10 %.

mod common;

use std::{io::Read, net::TcpListener, thread, time::Duration};

use common::{guard::ScratchDir, *};
use serde_json::Value;

const LEN: usize = 8 << 20;

#[test]
fn slow_reader_blocks_a_real_writer_for_as_long_as_strace_times_it() {
    let dir = ScratchDir::new("slow");
    let file = dir.join("payload");
    std::fs::write(&file, vec![b'c'; LEN]).unwrap();
    let log = dir.join("strace.log");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // A small receive window (inherited by the accepted socket), so that the writer's send
    // buffer does not grow to hold the whole payload.
    set_sockopt_int(&listener, libc::SOL_SOCKET, libc::SO_RCVBUF, 64 * 1024);
    let port = listener.local_addr().unwrap().port();
    let trace = Trace::start(&["-c", "cat", "--port", &port.to_string()]);
    let script = format!("exec cat {} > /dev/tcp/127.0.0.1/{port}", file.display());
    let mut writer = strace::command("write", &log)
        .args(["bash", "-c", &script])
        .spawn()
        .expect("strace (installed by cargo xtask test's set-up)");
    let (mut conn, _) = listener.accept().unwrap();
    // About 6 MB/s: 64 KiB every 10 ms, slower than cat writes.
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < LEN {
        thread::sleep(Duration::from_millis(10));
        let n = conn.read(&mut buf).unwrap();
        assert_ne!(n, 0, "EOF after {got} B");
        got += n;
    }
    assert!(writer.wait().unwrap().success());
    let out = trace.stop();
    let strace: Vec<(i64, f64)> = strace::read_log(&log)
        .into_iter()
        .filter(|c| c.tcp)
        .map(|c| (c.ret, c.secs))
        .collect();
    let sends: Vec<&Value> = out.iter().filter(|e| e["kind"] == "send").collect();
    let traced: Vec<i64> = sends.iter().map(|s| s["ret"].as_i64().unwrap()).collect();
    let straced: Vec<i64> = strace.iter().map(|(r, _)| *r).collect();
    assert_eq!(traced, straced, "write() results: sockbuf vs strace");
    assert_eq!(traced.iter().sum::<i64>(), LEN as i64);
    let (mut compared, mut worst) = (0, 0f64);
    for (s, (_, secs)) in sends.iter().zip(&strace) {
        let (tid, start, end) = (u(&s["tid"]), u(&s["start_ns"]), u(&s["ts_ns"]));
        let asleep: u64 = out
            .iter()
            .filter(|b| b["kind"] == "block" && u(&b["tid"]) == tid)
            .filter(|b| u(&b["start_ns"]) >= start && u(&b["end_ns"]) <= end)
            .map(|b| u(&b["duration_ns"]))
            .sum();
        assert_eq!(s["blocked"], asleep > 0, "{s}");
        let timed = secs * 1e9;
        // Short waits are below what strace's own cost lets it time to 10 %.
        if timed < 5e6 {
            continue;
        }
        compared += 1;
        let off = (asleep as f64 - timed).abs() / timed;
        worst = worst.max(off);
        assert!(
            off <= 0.10,
            "write of {} B: asleep {asleep} ns by sockbuf, {timed:.0} ns by strace -T: {:.1} % apart",
            s["ret"],
            off * 100.0
        );
    }
    // The kernel wakes a writer only once a third of its buffer is free: with the buffer
    // grown to megabytes, a few writes wait long, the others not at all.
    assert!(
        compared >= 2,
        "only {compared} of {} writes waited 5 ms or more",
        sends.len()
    );
    eprintln!(
        "slow reader: {compared} blocked writes of cat, asleep as long as strace -T timed them within {:.2} %",
        worst * 100.0
    );
}
