//! Helpers for the integration tests: run the real `sockbuf` binary (which loads the real
//! programs into this kernel), make loopback traffic, and read the kernel's own figures.
#![allow(dead_code)] // each test binary uses its own subset

pub mod guard;
pub mod metrics;
pub mod strace;
pub mod summary;

use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const SOCKBUF: &str = env!("CARGO_BIN_EXE_sockbuf");

/// A running `sockbuf trace --json`, its stdout parsed line by line.
pub struct Trace {
    child: Child,
    lines: mpsc::Receiver<Value>,
    pub start: Value,
}

impl Trace {
    /// Starts `sockbuf trace --json ARGS` and waits until its programs are attached.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(SOCKBUF)
            .arg("trace")
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sockbuf");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("read sockbuf stdout");
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("sockbuf printed a line that is not JSON ({e}): {line}")
                });
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let start = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("sockbuf did not start within 60 s");
        assert_eq!(
            start["kind"], "start",
            "first line must be the start object: {start}"
        );
        Self {
            child,
            lines,
            start,
        }
    }

    /// Stops it with SIGINT, as Ctrl-C would, and returns every object it printed after
    /// the start line; the last is the `end` totals. Nothing may be lost or missed, but in
    /// the kprobe backend: it has no standby copies (one busy flag per CPU for every kprobe
    /// program), and a probe hit in an interrupt while another probe's handler runs is
    /// skipped by the kernel; those runs are counted in `missed` (7.3 under emulation: 1 or 2
    /// in a few thousand), and the test's own figures must hold regardless.
    pub fn stop(self) -> Vec<Value> {
        let (out, missed) = self.stop_counting_missed();
        if std::env::var("SOCKBUF_ATTACH").as_deref() != Ok("kprobe") {
            assert_eq!(missed, 0, "the kernel skipped program runs: {}", end(&out));
        } else if missed > 0 {
            eprintln!("kprobe backend: {missed} runs skipped by the kernel, counted");
        }
        out
    }

    /// Like [`stop`](Self::stop), for tests whose threads contend for one CPU: where the
    /// kernel runs BPF programs preemptibly (7.x), a program already running on a CPU is not
    /// entered by another thread there, and sockbuf counts those runs as `missed`. Returns
    /// that count with the objects; the test must account for every missing event with it.
    pub fn stop_counting_missed(mut self) -> (Vec<Value>, u64) {
        // Give the ring buffer a moment: events from the last calls may still be in flight.
        thread::sleep(Duration::from_millis(200));
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait sockbuf");
        assert!(status.success(), "sockbuf exited with {status}");
        let out: Vec<Value> = self.lines.iter().collect();
        let end = out.last().expect("no output after start");
        assert_eq!(end["kind"], "end", "last line must be the totals: {end}");
        assert_eq!(end["lost"], 0, "events were lost: {end}");
        assert_eq!(end["faults"], 0, "kernel reads failed: {end}");
        let missed = u(&end["missed"]);
        (out, missed)
    }
}

/// Events of `kind` on socket `ino`.
pub fn events<'a>(out: &'a [Value], kind: &str, ino: u64) -> Vec<&'a Value> {
    out.iter()
        .filter(|v| v["kind"] == kind && v["sock_id"] == ino)
        .collect()
}

pub fn end(out: &[Value]) -> &Value {
    out.last().expect("end line")
}

/// Whether TCP still has `tcp_sendpage` (before 6.5): `sendfile()` and `splice()` reach it
/// instead of `tcp_sendmsg`, and no backend hooks it (docs/limits.md: Real programs).
pub fn has_sendpage() -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .expect("kallsyms")
        .lines()
        .any(|l| l.ends_with(" tcp_sendpage"))
}

/// A loopback port free at the moment, for a server the test starts.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .unwrap()
        .port()
}

/// A connected loopback pair: (client, server side), both blocking.
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let c = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
    let (s, _) = l.accept().expect("accept");
    (c, s)
}

/// The socket's inode number: what sockbuf reports as `sock_id` (and `ss -e` as `ino`).
pub fn ino(s: &impl AsRawFd) -> u64 {
    let path = format!("/proc/self/fd/{}", s.as_raw_fd());
    std::fs::metadata(path).expect("fstat socket").ino()
}

pub fn gettid() -> u32 {
    unsafe { libc::gettid() as u32 }
}

fn ioctl_int(s: &impl AsRawFd, req: libc::Ioctl) -> u64 {
    let mut v: libc::c_int = 0;
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), req, &mut v) };
    assert_eq!(rc, 0, "ioctl failed: {}", std::io::Error::last_os_error());
    v as u64
}

/// SIOCOUTQ: bytes in the send queue not yet acked (write_seq - snd_una).
pub fn outq(s: &impl AsRawFd) -> u64 {
    ioctl_int(s, libc::TIOCOUTQ)
}

/// SIOCINQ: bytes in the receive queue not yet read (rcv_nxt - copied_seq).
pub fn inq(s: &impl AsRawFd) -> u64 {
    ioctl_int(s, libc::FIONREAD)
}

/// Sets SO_SNDBUF or SO_RCVBUF (the kernel doubles it and turns autotuning off).
pub fn set_sockopt_int(s: &impl AsRawFd, level: i32, name: i32, v: i32) {
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt failed: {}",
        std::io::Error::last_os_error()
    );
}

/// A loopback pair with fixed buffer sizes set before connecting, so capacity does not depend
/// on autotuning: (client, server side).
pub fn tcp_pair_with_buffers(sndbuf: i32, rcvbuf: i32) -> (TcpStream, TcpStream) {
    use std::os::fd::FromRawFd;
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    // SO_RCVBUF must be set on the listener to apply before the handshake (window scaling).
    set_sockopt_int(&l, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf);
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    let c = unsafe { TcpStream::from_raw_fd(fd) };
    set_sockopt_int(&c, libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf);
    let sin = sockaddr_in(l.local_addr().unwrap());
    let rc = unsafe {
        libc::connect(
            fd,
            (&raw const sin).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
    let (s, _) = l.accept().expect("accept");
    (c, s)
}

/// An IPv4 address as the C API takes it.
pub fn sockaddr_in(addr: std::net::SocketAddr) -> libc::sockaddr_in {
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("{addr} is not IPv4")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// CLOCK_MONOTONIC in ns: the clock of sockbuf's timestamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Names the calling thread (its kernel comm), for comm filters.
pub fn set_thread_name(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// SIOCOUTQNSD: bytes in the send queue never sent (write_seq - snd_nxt).
pub fn outq_unsent(s: &impl AsRawFd) -> u64 {
    const SIOCOUTQNSD: libc::Ioctl = 0x894B;
    ioctl_int(s, SIOCOUTQNSD)
}

pub fn sockopt_int(s: &impl AsRawFd, level: i32, name: i32) -> u64 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let rc = unsafe { libc::getsockopt(s.as_raw_fd(), level, name, (&raw mut v).cast(), &mut len) };
    assert_eq!(rc, 0, "getsockopt failed");
    v as u64
}

/// TCP_INFO, as the kernel fills it.
pub fn tcp_info(s: &impl AsRawFd) -> libc::tcp_info {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO failed");
    info
}

/// The cgroup v2 hierarchy's mount point (unified or hybrid).
pub fn cgroup2_root() -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("a cgroup2 mount")
        .to_owned()
}

/// Waits until `f` holds, polling; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// `traced` equals the independent `reference`, or, where the kernel skipped `missed` program
/// runs (counted, as on a kernel that preempts BPF programs with no standby copy to take the
/// run: kprobes), falls short by no more than that many calls of `per_call` bytes (or items).
pub fn agrees(traced: u64, reference: u64, missed: u64, per_call: u64, what: &str) {
    if missed == 0 {
        assert_eq!(traced, reference, "{what}: sockbuf vs the reference");
    } else {
        assert!(
            traced <= reference && reference - traced <= missed * per_call,
            "{what}: sockbuf {traced} vs the reference {reference}, {missed} runs skipped"
        );
        eprintln!("{what}: {missed} runs skipped by the kernel, counted; {traced} of {reference}");
    }
}

pub fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

/// Runs an experiment, `sockbuf SUB --json ARGS`, as a user would: every line is JSON, the
/// last is the `report_kind` report, every check in it passed, the exit code is 0 and its
/// network namespace is gone. `on_report` runs while the experiment is still up (with
/// `--hold`), given the namespace's path (`/proc/PID/fd/N`). Returns the events and the
/// report.
pub fn experiment(
    sub: &str,
    report_kind: &str,
    args: &[&str],
    mut on_report: impl FnMut(&str),
) -> (Vec<Value>, Value) {
    let mut child = Command::new(SOCKBUF)
        .args([sub, "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn sockbuf {sub}: {e}"));
    let mut events = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["kind"] == report_kind {
            on_report(v["netns"].as_str().expect("netns"));
        }
        events.push(v);
    }
    let status = child.wait().unwrap();
    let report = events.pop().expect("output");
    assert_eq!(
        report["kind"], report_kind,
        "the report is the last line: {report}"
    );
    assert!(
        status.success(),
        "sockbuf {sub} exited with {status}: {report}"
    );
    for (name, pass) in report["checks"].as_object().expect("checks") {
        assert_eq!(pass, true, "check {name} failed: {report}");
    }
    assert!(
        !Path::new(&format!("/run/netns/sockbuf-{}", child.id())).exists(),
        "a named namespace left behind"
    );
    (events, report)
}

/// The (device, inode) of network namespace `path` (`/proc/PID/fd/N`, `/proc/PID/ns/net`).
pub fn netns_inode(path: impl AsRef<Path>) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether any thread is in network namespace `ns` or a bind mount (`ip netns`) holds it.
pub fn netns_alive(ns: (u64, u64)) -> bool {
    let dirs = |p: &Path| {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
    };
    let tasks = dirs(Path::new("/proc"))
        .flat_map(|p| dirs(&p.join("task")).collect::<Vec<_>>())
        .map(|t| t.join("ns/net"));
    let mounts = dirs(Path::new("/run/netns"));
    tasks.chain(mounts).any(|p| netns_inode(&p) == Some(ns))
}

/// Whether backend `attach` hooks tracepoints (raw or BTF-typed): it sees no kernel function
/// that no tracepoint marks (docs/limits.md).
pub fn tracepoints_only(attach: &str) -> bool {
    attach == "tracepoint" || attach == "tp_btf"
}
