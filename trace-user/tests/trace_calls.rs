//! One application call, many kernel sends: `sendfile()`, `splice()` and `sendmmsg()`, or
//! receives: `recvmmsg()`. Each kernel call names its syscall and piece, the pieces of one call share `call_ns`, and a
//! `call` event says what the application got back, equal to the program's own results,
//! EAGAINs included (and no more: a piece's EAGAIN after earlier pieces copied bytes is
//! flagged, as the application never saw it).

mod common;

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read, Write},
    net::TcpStream,
    os::fd::{AsRawFd, FromRawFd},
    thread,
    time::Duration,
};

use common::{summary::SummaryRun, *};
use serde_json::Value;

/// A file of `len` bytes in memory (`memfd`), which `sendfile()` reads like any file.
fn memfile(len: usize) -> File {
    let fd = unsafe { libc::memfd_create(c"sockbuf-test".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(&vec![7u8; len]).expect("fill memfd");
    f
}

/// What the application got from its calls: per call, the result.
#[derive(Default, Debug)]
struct AppCalls {
    results: Vec<i64>,
}

impl AppCalls {
    fn record(&mut self, r: isize) -> i64 {
        let r = if r < 0 {
            -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap())
        } else {
            r as i64
        };
        self.results.push(r);
        r
    }

    fn bytes(&self) -> u64 {
        self.results
            .iter()
            .filter(|r| **r > 0)
            .map(|r| *r as u64)
            .sum()
    }

    fn eagains(&self) -> usize {
        self.results.iter().filter(|r| **r == -11).count()
    }
}

/// A reader that drains `s` slowly (small reads with pauses), so that a non-blocking writer
/// meets a full buffer again and again, until `total` bytes arrived.
fn slow_reader(mut s: TcpStream, total: u64) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut buf = [0u8; 32 * 1024];
        let mut got = 0;
        while got < total {
            let n = s.read(&mut buf).expect("read");
            assert_ne!(n, 0, "early EOF after {got} B");
            got += n as u64;
            thread::sleep(Duration::from_micros(300));
        }
        got
    })
}

/// A pipe holding `len` bytes: its read end, and its write end (closed when dropped). The
/// pipe is made that large, so the whole payload waits in it and one `splice()` takes it all.
fn filled_pipe(len: usize) -> (i32, File) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    assert!(unsafe { libc::fcntl(wr, libc::F_SETPIPE_SZ, len as i32) } >= len as i32);
    let mut pipe_in = unsafe { File::from_raw_fd(wr) };
    pipe_in.write_all(&vec![1u8; len]).unwrap();
    (rd, pipe_in)
}

/// `splice()`s `len` bytes from pipe `rd` to socket `fd`, as many calls as it takes; the
/// program's own results.
fn splice_all(rd: i32, fd: i32, len: usize) -> AppCalls {
    let mut app = AppCalls::default();
    let mut left = len;
    while left > 0 {
        let r =
            unsafe { libc::splice(rd, std::ptr::null_mut(), fd, std::ptr::null_mut(), left, 0) };
        left -= app.record(r).max(0) as usize;
    }
    app
}

/// One iovec per buffer (the kernel writes into them for a receive).
fn iovecs<B: AsRef<[u8]>>(bufs: &[B]) -> Vec<libc::iovec> {
    bufs.iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ref().as_ptr() as *mut _,
            iov_len: b.as_ref().len(),
        })
        .collect()
}

/// One message per iovec, for `sendmmsg()`/`recvmmsg()`.
fn mmsghdrs(iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovs.iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
}

/// `calls` `sendmmsg()`s on `fd` of five messages of 1 to 5 × `unit` bytes, each followed by
/// `after` (a peer reading them); the program's own results.
fn sendmmsg_fives(fd: i32, unit: usize, calls: usize, mut after: impl FnMut()) -> AppCalls {
    let bufs: Vec<Vec<u8>> = (1..=5).map(|k| vec![b'm'; unit * k]).collect();
    let mut iovs = iovecs(&bufs);
    let mut msgs = mmsghdrs(&mut iovs);
    let mut app = AppCalls::default();
    for _ in 0..calls {
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), 5, 0) };
        assert_eq!(app.record(r as isize), 5);
        after();
    }
    app
}

/// Checks the trace of socket `ino`'s calls of `syscall` against the program's own results:
/// one `call` event per call, in order, with its result; the pieces of each call (sends with
/// its `call_ns` on the thread) add up to the call's bytes and count.
fn check_calls(out: &[Value], ino: u64, syscall: &str, app: &AppCalls) {
    check_pieced(out, ino, syscall, "send", app)
}

/// [`check_calls`] for calls whose pieces are events of `kind` (`send`, `recv`, `udp_send`).
fn check_pieced(out: &[Value], ino: u64, syscall: &str, kind: &str, app: &AppCalls) {
    let calls: Vec<&Value> = events(out, "call", ino)
        .into_iter()
        .filter(|c| c["syscall"] == syscall)
        .collect();
    let got: Vec<i64> = calls.iter().map(|c| c["ret"].as_i64().unwrap()).collect();
    assert_eq!(
        got, app.results,
        "{syscall}: traced results vs the program's"
    );
    let mut pieces: BTreeMap<(u64, u64), Vec<&Value>> = BTreeMap::new();
    for s in events(out, kind, ino) {
        if s["syscall"] == syscall {
            pieces
                .entry((u(&s["tid"]), u(&s["call_ns"])))
                .or_default()
                .push(s);
        }
    }
    assert_eq!(pieces.len(), calls.len(), "{syscall}: one call_ns per call");
    for c in &calls {
        let key = (u(&c["tid"]), u(&c["call_ns"]));
        let p = pieces
            .get(&key)
            .unwrap_or_else(|| panic!("{syscall}: no pieces for {c}"));
        let idx: Vec<u64> = p.iter().map(|s| u(&s["piece"])).collect();
        assert_eq!(
            idx,
            (0..p.len() as u64).collect::<Vec<_>>(),
            "{syscall}: pieces numbered in order: {c}"
        );
        assert_eq!(u(&c["pieces"]), p.len() as u64, "{c}");
        let bytes = if kind == "udp_send" {
            "bytes"
        } else {
            "copied"
        };
        let copied: u64 = p.iter().map(|s| u(&s[bytes])).sum();
        assert_eq!(u(&c["copied"]), copied, "{syscall}: pieces' bytes: {c}");
        // An error piece is the last; the application saw it only if nothing was copied.
        for (i, s) in p.iter().enumerate() {
            if s["ret"].as_i64().unwrap() < 0 {
                assert_eq!(i, p.len() - 1, "{syscall}: an error ends the call: {c}");
                assert_eq!(s["unseen_error"], copied > 0, "{s} in {c}");
            } else {
                assert_eq!(s["unseen_error"], false, "{s}");
            }
        }
    }
}

#[test]
fn sendfile_pieces_and_results_equal_the_programs_calls() {
    const LEN: usize = 4 << 20;
    let file = memfile(LEN);
    let (client, server) = tcp_pair_with_buffers(64 * 1024, 64 * 1024);
    client.set_nonblocking(true).unwrap();
    let ino = ino(&client);
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let reader = slow_reader(server, LEN as u64);
    let mut app = AppCalls::default();
    let mut off: libc::off_t = 0;
    while (off as usize) < LEN {
        let r = unsafe {
            libc::sendfile(
                client.as_raw_fd(),
                file.as_raw_fd(),
                &mut off,
                LEN - off as usize,
            )
        };
        if app.record(r) == -11 {
            thread::sleep(Duration::from_micros(200));
        }
    }
    assert_eq!(reader.join().unwrap(), LEN as u64);
    let out = trace.stop();
    assert_eq!(app.bytes(), LEN as u64);
    if has_sendpage() {
        // Documented: before 6.5 sendfile() bypasses tcp_sendmsg, and sockbuf sees nothing.
        assert!(events(&out, "send", ino).is_empty() && events(&out, "call", ino).is_empty());
        return;
    }
    assert!(
        app.eagains() > 0,
        "the slow reader made sendfile() meet EAGAIN"
    );
    check_calls(&out, ino, "sendfile", &app);
}

#[test]
fn splice_from_a_pipe_is_one_call_of_pieces() {
    const LEN: usize = 1 << 20;
    let (client, server) = tcp_pair();
    let ino = ino(&client);
    let (rd, _pipe_in) = filled_pipe(LEN);
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let reader = slow_reader(server, LEN as u64);
    let app = splice_all(rd, client.as_raw_fd(), LEN);
    assert_eq!(reader.join().unwrap(), LEN as u64);
    let out = trace.stop();
    unsafe { libc::close(rd) };
    if has_sendpage() {
        assert!(events(&out, "send", ino).is_empty() && events(&out, "call", ino).is_empty());
        return;
    }
    check_calls(&out, ino, "splice", &app);
    let pieces = events(&out, "send", ino).len();
    assert!(pieces > app.results.len(), "{pieces} pieces for {app:?}");
}

#[test]
fn sendmmsg_messages_are_pieces_of_one_call() {
    let (client, mut server) = tcp_pair();
    let ino = ino(&client);
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let app = sendmmsg_fives(client.as_raw_fd(), 1000, 3, || {
        let mut buf = vec![0u8; 15_000];
        server.read_exact(&mut buf).unwrap();
    });
    let out = trace.stop();
    check_calls(&out, ino, "sendmmsg", &app);
    let sends = events(&out, "send", ino);
    let copied: Vec<u64> = sends.iter().map(|s| u(&s["copied"])).collect();
    assert_eq!(copied, [1000, 2000, 3000, 4000, 5000].repeat(3));
}

#[test]
fn recvmmsg_messages_are_pieces_of_one_call() {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let ino = ino(&rx);
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let bufs = vec![[0u8; 1000]; 8];
    let mut iovs = iovecs(&bufs);
    let mut msgs = mmsghdrs(&mut iovs);
    let mut app = AppCalls::default();
    let mut sizes = Vec::new();
    for _ in 0..2 {
        for k in 1..=5 {
            tx.send(&vec![b'r'; 100 * k]).unwrap();
            sizes.push(100 * k as u64);
        }
        // Waits for the first datagram, then takes what is there: the sixth try finds
        // none (EAGAIN, which the application does not see: it gets 5).
        let r = unsafe {
            libc::recvmmsg(
                rx.as_raw_fd(),
                msgs.as_mut_ptr(),
                8,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(app.record(r as isize), 5);
    }
    let out = trace.stop();
    check_pieced(&out, ino, "recvmmsg", "recv", &app);
    let copied: Vec<u64> = events(&out, "recv", ino)
        .iter()
        .filter(|e| e["ret"].as_i64().unwrap() >= 0)
        .map(|e| u(&e["copied"]))
        .collect();
    assert_eq!(copied, sizes, "each datagram a piece");
}

#[test]
fn udp_sendmmsg_datagrams_are_pieces_of_one_call() {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let ino = ino(&tx);
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let app = sendmmsg_fives(tx.as_raw_fd(), 100, 2, || {});
    let out = trace.stop();
    check_pieced(&out, ino, "sendmmsg", "udp_send", &app);
    let bytes: Vec<u64> = events(&out, "udp_send", ino)
        .iter()
        .map(|e| u(&e["bytes"]))
        .collect();
    assert_eq!(bytes, [100, 200, 300, 400, 500].repeat(2));
}

#[test]
fn splice_from_a_tcp_socket_is_a_receive() {
    const LEN: usize = 300_000;
    let (mut client, server) = tcp_pair();
    let ino = ino(&server);
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    client.write_all(&vec![2u8; LEN]).unwrap();
    drop(client);
    let mut pipe_out = unsafe { File::from_raw_fd(rd) };
    let mut app = AppCalls::default();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let r = unsafe {
            libc::splice(
                server.as_raw_fd(),
                std::ptr::null_mut(),
                wr,
                std::ptr::null_mut(),
                1 << 16,
                0,
            )
        };
        if app.record(r) <= 0 {
            break;
        }
        pipe_out.read_exact(&mut buf[..r as usize]).unwrap();
    }
    let attach = trace.start["attach"].as_str().unwrap().to_owned();
    let out = trace.stop();
    unsafe { libc::close(wr) };
    assert_eq!(app.results.iter().sum::<i64>(), LEN as i64, "{app:?}");
    let recvs = events(&out, "recv", ino);
    if tracepoints_only(&attach) {
        // docs/limits.md: tcp_read_sock passes no tracepoint.
        assert!(recvs.is_empty(), "{recvs:?}");
        return;
    }
    let got: Vec<i64> = recvs.iter().map(|e| e["ret"].as_i64().unwrap()).collect();
    assert_eq!(got, app.results, "one recv per splice(), its result");
    check_pieced(&out, ino, "splice", "recv", &app);
}

/// `--summary` (counts only) counts each kernel send of a `sendmmsg()` and of a `splice()`,
/// and each of those application calls once as a pieced call; the `write()`s beside them are
/// no pieced calls. Where the pieced syscalls' entries are hooked it tells them by a mark the
/// entry leaves, not by the syscall's number: a mark left behind would make the writes pieces.
#[test]
fn summary_counts_each_pieced_call_once_and_writes_as_none() {
    const LEN: usize = 256 << 10;
    let (mut client, mut server) = tcp_pair();
    let ino = ino(&client);
    let (rd, _pipe_in) = filled_pipe(LEN);
    let run = SummaryRun::start(&["-p", &std::process::id().to_string()]);
    let mut buf = vec![0u8; LEN];
    // A write, three sendmmsg() of five messages, a write, one splice() of the pipe, a write.
    client.write_all(&[2u8; 100]).unwrap();
    let mmsg = sendmmsg_fives(client.as_raw_fd(), 1000, 3, || {
        server.read_exact(&mut buf[..15_000]).unwrap();
    });
    assert_eq!(mmsg.results, [5, 5, 5], "messages sent");
    const MMSG_BYTES: u64 = 3 * 15_000;
    client.write_all(&[2u8; 100]).unwrap();
    // Left to read: the first write's 100 B (the reads above took 15 000 B each), the rest.
    let reader = slow_reader(server.try_clone().unwrap(), (LEN + 300) as u64);
    let splice = splice_all(rd, client.as_raw_fd(), LEN);
    client.write_all(&[2u8; 100]).unwrap();
    assert_eq!(reader.join().unwrap(), (LEN + 300) as u64);
    unsafe { libc::close(rd) };
    let (socks, _) = run.stop();
    let sock = socks
        .iter()
        .find(|s| s["sock_id"] == ino)
        .unwrap_or_else(|| panic!("socket {ino} not in the summary: {socks:?}"));
    if has_sendpage() {
        // Before 6.5 splice() bypasses tcp_sendmsg (documented): the rest still counts.
        assert_eq!(u(&sock["copied_bytes"]), 300 + MMSG_BYTES, "{sock}");
        assert_eq!(u(&sock["pieced_calls"]), 3, "{sock}");
        return;
    }
    let copied = 300 + MMSG_BYTES + splice.bytes();
    assert_eq!(u(&sock["copied_bytes"]), copied, "{sock}");
    assert_eq!(
        u(&sock["pieced_calls"]),
        3 + splice.results.len() as u64,
        "one per sendmmsg() and splice() call, none per write(): {sock}"
    );
    assert!(
        u(&sock["sends"]) > 3 + 15 + splice.results.len() as u64,
        "every piece counted as a send: {sock}"
    );
}
