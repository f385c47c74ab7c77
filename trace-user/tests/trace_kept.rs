//! `--summary` on BTF-typed hooks: established sockets of sockbuf's network namespace keep
//! their counts themselves (socket-local storage), read live through sock_diag and added to
//! the summary's at their CLOSE; sockets of other namespaces count the usual way. Every
//! path checked against what the test's own sockets did.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    thread,
};

use common::{summary::SummaryRun, *};
use serde_json::Value;

const WRITE: usize = 64;

/// The summary's entry for socket `ino`.
fn sock_of(socks: &[Value], ino: u64) -> &Value {
    socks
        .iter()
        .find(|s| s["sock_id"] == ino)
        .unwrap_or_else(|| panic!("socket {ino} not in the summary: {socks:?}"))
}

/// `n` writes of [`WRITE`] bytes from `c`, all read at `s`: the reader's calls.
fn traffic(c: &mut TcpStream, s: &mut TcpStream, n: u64) -> u64 {
    let total = n * WRITE as u64;
    let mut reader = s.try_clone().expect("clone");
    let reads = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let (mut got, mut calls) = (0, 0u64);
        while got < total {
            got += reader.read(&mut buf).expect("read") as u64;
            calls += 1;
        }
        calls
    });
    for _ in 0..n {
        assert_eq!(c.write(&[7u8; WRITE]).expect("write"), WRITE);
    }
    reads.join().expect("reader")
}

/// Brings the calling thread's namespace's loopback up (a new namespace has it down).
fn loopback_up() {
    // SAFETY: plain socket and ioctl calls on an ifreq this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket");
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        assert_eq!(
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr),
            0,
            "SIOCGIFFLAGS"
        );
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr), 0, "SIOCSIFFLAGS");
        libc::close(fd);
    }
}

/// Checks socket `ino`'s sends (`writes` of [`WRITE`] bytes) or receives (`reads` calls,
/// `bytes` in all) in the summary.
fn check(socks: &[Value], ino: u64, writes: u64, reads: u64, bytes: u64, what: &str) {
    let s = sock_of(socks, ino);
    assert_eq!(u(&s["sends"]), writes, "{what}: sends {s}");
    assert_eq!(u(&s["copied_bytes"]), writes * WRITE as u64, "{what}: {s}");
    assert_eq!(u(&s["recvs"]), reads, "{what}: receives {s}");
    assert_eq!(u(&s["received_bytes"]), bytes, "{what}: {s}");
}

/// Three connections under `--summary`: one open at the end (its counts read live), one
/// closed during the session (added at its CLOSE), one in a namespace the test makes
/// (counted the usual way). Each side's calls and bytes must be exact, and with tp_btf the
/// four sockets of sockbuf's namespace must say they kept their counts themselves.
#[test]
fn summary_counts_what_sockets_kept_live_closed_and_elsewhere() {
    const LIVE: u64 = 3_000;
    const CLOSED: u64 = 2_000;
    const ELSEWHERE: u64 = 1_000;
    let pid = std::process::id().to_string();
    let run = SummaryRun::start(&["-p", &pid]);

    let (mut c, mut s) = tcp_pair();
    c.set_nodelay(true).unwrap();
    let live_reads = traffic(&mut c, &mut s, LIVE);
    let live = (ino(&c), ino(&s));

    let (mut c2, mut s2) = tcp_pair();
    c2.set_nodelay(true).unwrap();
    let closed_reads = traffic(&mut c2, &mut s2, CLOSED);
    let closed = (ino(&c2), ino(&s2));
    drop(c2);
    let mut buf = [0u8; 1];
    assert_eq!(s2.read(&mut buf).expect("the FIN"), 0);
    let closed_reads = closed_reads + 1; // the read that met the FIN
    drop(s2);

    // A namespace of its own: unshared by this thread alone, gone with its sockets.
    let (elsewhere, elsewhere_reads, held) = thread::spawn(|| {
        // SAFETY: unshare changes this thread's namespace only.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        loopback_up();
        let (mut c, mut s) = tcp_pair();
        c.set_nodelay(true).unwrap();
        let reads = traffic(&mut c, &mut s, ELSEWHERE);
        ((ino(&c), ino(&s)), reads, (c, s))
    })
    .join()
    .expect("the namespace's thread");

    let attach = run.attach.clone();
    let (summary, _end) = run.stop_whole();
    let socks = summary["sockets"].as_array().expect("sockets");
    check(socks, live.0, LIVE, 0, 0, "live client");
    check(
        socks,
        live.1,
        0,
        live_reads,
        LIVE * WRITE as u64,
        "live server",
    );
    check(socks, closed.0, CLOSED, 0, 0, "closed client");
    check(
        socks,
        closed.1,
        0,
        closed_reads,
        CLOSED * WRITE as u64,
        "closed server",
    );
    check(
        socks,
        elsewhere.0,
        ELSEWHERE,
        0,
        0,
        "other namespace's client",
    );
    let other = ELSEWHERE * WRITE as u64;
    check(
        socks,
        elsewhere.1,
        0,
        elsewhere_reads,
        other,
        "other namespace's server",
    );
    // Where the hooks are typed (fentry, tp_btf), each of the four; elsewhere none (the
    // same counts above).
    let kept = if matches!(attach.as_str(), "tp_btf" | "fentry") {
        4
    } else {
        0
    };
    assert_eq!(
        u(&summary["sockets_counting_themselves"]),
        kept,
        "{summary}"
    );
    drop((c, s, held));
}

/// `n` writes of [`WRITE`] bytes on `c` from a thread named `name`.
fn writes_as(name: &str, c: &TcpStream, n: u64) {
    let mut c = c.try_clone().expect("clone");
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            for _ in 0..n {
                assert_eq!(c.write(&[7u8; WRITE]).expect("write"), WRITE);
            }
        })
        .expect("spawn")
        .join()
        .expect("writer");
}

/// With `-c`, a socket that keeps its counts counts only the calls of threads of that name:
/// another thread writing on the same socket between two of the chosen one's bursts (its
/// counts made by then, so its calls meet them) adds nothing, nor does the reader.
#[test]
fn summary_counts_only_the_chosen_threads_calls_on_a_socket_that_keeps_them() {
    const CHOSEN: u64 = 1_500;
    const OTHER: u64 = 700;
    let pid = std::process::id().to_string();
    let run = SummaryRun::start(&["-p", &pid, "-c", "sb-kept-in"]);
    let (c, mut s) = tcp_pair();
    c.set_nodelay(true).unwrap();
    let total = (2 * CHOSEN + OTHER) * WRITE as u64;
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < total {
            got += s.read(&mut buf).expect("read") as u64;
        }
        s
    });
    writes_as("sb-kept-in", &c, CHOSEN);
    writes_as("sb-kept-out", &c, OTHER);
    writes_as("sb-kept-in", &c, CHOSEN);
    let s = reader.join().expect("reader");
    let attach = run.attach.clone();
    let (summary, _end) = run.stop_whole();
    let socks = summary["sockets"].as_array().expect("sockets");
    check(
        socks,
        ino(&c),
        2 * CHOSEN,
        0,
        0,
        "the chosen thread's socket",
    );
    assert!(
        socks.iter().all(|x| x["sock_id"] != ino(&s)),
        "the reader fails -c: its socket has no row: {summary}"
    );
    let kept = u64::from(matches!(attach.as_str(), "tp_btf" | "fentry"));
    assert_eq!(
        u(&summary["sockets_counting_themselves"]),
        kept,
        "{summary}"
    );
}
