//! `sockbuf trace` against real loopback traffic: send events agree exactly with what the
//! writer saw and with the kernel's own queue figures.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    os::unix::fs::PermissionsExt,
    process::Command,
    thread,
    time::Duration,
};

use common::*;

#[test]
fn hundred_writes_of_1000_bytes() {
    let pid = std::process::id().to_string();
    let trace = Trace::start(&["-p", &pid]);
    let (mut c, mut s) = tcp_pair();
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < 100_000 {
            total += s.read(&mut buf).expect("read");
        }
        total
    });
    let chunk = [7u8; 1000];
    for _ in 0..100 {
        assert_eq!(
            c.write(&chunk).expect("write"),
            1000,
            "a blocking loopback write copies all"
        );
    }
    assert_eq!(reader.join().unwrap(), 100_000);
    let tid = gettid();
    let (lport, rport) = (
        c.local_addr().unwrap().port(),
        c.peer_addr().unwrap().port(),
    );
    let ino = ino(&c);
    let out = trace.stop();

    let sends = events(&out, "send", ino);
    assert_eq!(sends.len(), 100, "one send event per write call");
    for e in &sends {
        assert_eq!(u(&e["requested"]), 1000, "{e}");
        assert_eq!(u(&e["copied"]), 1000, "{e}");
        assert_eq!(u(&e["pid"]), u64::from(std::process::id()), "{e}");
        assert_eq!(u(&e["tid"]), u64::from(tid), "{e}");
        assert_eq!(u(&e["lport"]), u64::from(lport), "{e}");
        assert_eq!(u(&e["rport"]), u64::from(rport), "{e}");
        assert!(e.get("error").is_none(), "{e}");
    }
    // The writes tile the stream: each starts where the previous ended.
    for w in sends.windows(2) {
        assert_eq!(w[0]["seq_end"], w[1]["seq_start"]);
    }
    assert_eq!(
        u(&sends[99]["seq_end"]) - u(&sends[0]["seq_start"]),
        100_000
    );
}

#[test]
fn nonblocking_writer_until_eagain_matches_queues() {
    let pid = std::process::id().to_string();
    let trace = Trace::start(&["-p", &pid]);
    let (mut c, s) = tcp_pair(); // the server side never reads
    c.set_nonblocking(true).unwrap();
    let chunk = [1u8; 1000];
    let (mut accepted, mut eagains, mut calls) = (0u64, 0u64, 0u64);
    // Write until EAGAIN, then retry a few times: the ACKs may free a little space.
    while eagains < 5 {
        calls += 1;
        match c.write(&chunk) {
            Ok(n) => accepted += n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                eagains += 1;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    // Every accepted byte is in the writer's send queue or the reader's receive queue, once
    // the last ACK has come back (until then bytes the peer holds are counted twice). Then
    // one more call, so that the last event sees the queue as it stays (a slow machine's
    // late ACKs may have freed room for it).
    loop {
        wait_until(
            Duration::from_secs(3),
            "SIOCOUTQ + SIOCINQ == accepted",
            || outq(&c) + inq(&s) == accepted,
        );
        calls += 1;
        match c.write(&chunk) {
            Ok(n) => accepted += n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                eagains += 1;
                break;
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    // The kernel's own figures after that last call.
    let final_sndbuf = sockopt_int(&c, libc::SOL_SOCKET, libc::SO_SNDBUF);
    // Where the last byte written sits in the stream: the queue plus what was acked. It holds
    // however many ACKs arrive between that call and these reads (6.1's zero-window probes
    // move the queue by a few KiB).
    let final_end = loop {
        let acked = tcp_info(&c).tcpi_bytes_acked;
        let q = outq(&c);
        if tcp_info(&c).tcpi_bytes_acked == acked {
            break q + acked; // no ACK between the two reads
        }
    };
    let ino = ino(&c);
    let out = trace.stop();

    let sends = events(&out, "send", ino);
    assert_eq!(sends.len() as u64, calls, "one event per write call");
    let copied: u64 = sends.iter().map(|e| u(&e["copied"])).sum();
    assert_eq!(
        copied, accepted,
        "traced copies == bytes the writer saw accepted"
    );
    let traced_eagain = sends.iter().filter(|e| e["error"] == "EAGAIN").count() as u64;
    assert_eq!(
        traced_eagain, eagains,
        "traced EAGAINs == EAGAINs the writer saw"
    );
    for e in sends.iter().filter(|e| e["error"] == "EAGAIN") {
        assert_eq!(u(&e["copied"]), 0);
        // Rust's std sends with MSG_NOSIGNAL; a non-blocking socket adds MSG_DONTWAIT.
        assert_eq!(
            e["msg_flags"],
            serde_json::json!(["MSG_DONTWAIT", "MSG_NOSIGNAL"]),
            "{e}"
        );
    }
    // The last event saw the queue the kernel reported right after that call.
    let last = sends.last().unwrap();
    assert_eq!(
        u(&last["send_q"]) + u(&last["acked"]),
        final_end,
        "Send-Q + acked at the last call == SIOCOUTQ + TCP_INFO bytes_acked now: {last}"
    );
    assert_eq!(u(&last["sndbuf"]), final_sndbuf, "{last}");
}

#[test]
fn non_root_gets_a_clear_error_and_exit_2() {
    // A copy that user nobody can reach (the build tree may be under a private directory).
    let dir = std::env::temp_dir().join(format!("sockbuf-nonroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("sockbuf");
    std::fs::copy(SOCKBUF, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args(["trace", "-d", "1s"])
        .output()
        .expect("run setpriv");
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim(),
        "sockbuf: error: sockbuf needs root (or CAP_BPF and CAP_PERFMON): run it with sudo"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_input_exits_2_with_one_line() {
    for (args, want) in [
        (
            &["trace", "-p", "4000000"][..],
            "no process with pid 4000000",
        ),
        (
            &["trace", "--cgroup", "/nonexistent"][..],
            "--cgroup /nonexistent",
        ),
        (
            &["trace", "--comm", "a-very-long-command-name"][..],
            "longer than the kernel's 15-byte comm",
        ),
    ] {
        let out = Command::new(SOCKBUF).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    let out = Command::new(SOCKBUF)
        .args(["trace", "-d", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn writev_of_many_iovecs_names_its_requested_bytes() {
    // 1 024 iovecs (the kernel's most) of different lengths, and a sendmsg of 100.
    let (c, mut s) = tcp_pair();
    let ino = ino(&c);
    let bufs: Vec<Vec<u8>> = (0..1024).map(|i| vec![b'v'; 1 + i % 7]).collect();
    let iovs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    let want: usize = bufs.iter().map(Vec::len).sum();
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&c);
    let n = unsafe { libc::writev(fd, iovs.as_ptr(), 1024) };
    assert_eq!(n, want as isize, "{}", std::io::Error::last_os_error());
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovs.as_ptr() as *mut _;
    msg.msg_iovlen = 100;
    let m = unsafe { libc::sendmsg(fd, &msg, 0) };
    let want_msg: usize = bufs[..100].iter().map(Vec::len).sum();
    assert_eq!(m, want_msg as isize);
    let mut got = vec![0u8; want + want_msg];
    s.read_exact(&mut got).unwrap();
    let out = trace.stop();
    let sends = events(&out, "send", ino);
    let seen: Vec<(u64, u64)> = sends
        .iter()
        .map(|e| (u(&e["requested"]), u(&e["copied"])))
        .collect();
    assert_eq!(
        seen,
        [
            (want as u64, want as u64),
            (want_msg as u64, want_msg as u64)
        ],
        "{sends:?}"
    );
}
