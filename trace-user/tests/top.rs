//! `sockbuf top`: the refreshes against what the test's own sockets did (their byte and call
//! counts, SIOCOUTQ), and the screen driven for real under tmux.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::Shutdown,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// `sockbuf top --batch --json ARGS`, started and attached.
struct Top {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Drop for Top {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Top {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(SOCKBUF)
            .args(["top", "--batch", "--json", "--interval", "300ms"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sockbuf top");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let start: Value = serde_json::from_str(&lines.next().expect("a start line").unwrap())
            .expect("JSON start line");
        assert_eq!(start["kind"], "start", "{start}");
        Self { child, lines }
    }

    /// The next refresh.
    fn next(&mut self) -> Value {
        let line = self
            .lines
            .next()
            .expect("sockbuf top ended early")
            .expect("read a refresh");
        let v: Value = serde_json::from_str(&line).expect("JSON refresh");
        assert_eq!(v["kind"], "top", "{v}");
        assert_eq!(v["lost"], 0, "{v}");
        assert_eq!(v["faults"], 0, "{v}");
        v
    }

    /// Stops it as Ctrl-C would; the refreshes it still wrote.
    fn stop(mut self) -> Vec<Value> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let rest: Vec<Value> = self
            .lines
            .by_ref()
            .map(|l| serde_json::from_str(&l.expect("read")).expect("JSON refresh"))
            .collect();
        let status = self.child.wait().expect("wait sockbuf top");
        assert!(status.success(), "sockbuf top exited with {status}");
        rest
    }
}

/// Socket `ino`'s row in refresh `v`.
fn row(v: &Value, ino: u64) -> Option<&Value> {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["sock_id"] == ino)
}

#[test]
fn top_refreshes_add_up_to_what_the_sockets_did() {
    const BATCHES: u64 = 30;
    const WRITES: u64 = 40;
    const SIZE: u64 = 1000;
    const TOTAL: u64 = BATCHES * WRITES * SIZE;
    const READ_BUF: u64 = 1 << 16;
    let pid = std::process::id().to_string();
    let mut top = Top::start(&["-p", &pid]);
    let mut seen = vec![top.next()];
    let (mut c, mut s) = tcp_pair();
    let (c_ino, s_ino) = (ino(&c), ino(&s));
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; READ_BUF as usize];
        let mut n = 0;
        while n < TOTAL {
            n += s.read(&mut buf).unwrap() as u64;
        }
        s
    });
    // Paced over about 1.2 s: several refreshes see bytes moving.
    for _ in 0..BATCHES {
        for _ in 0..WRITES {
            assert_eq!(c.write(&[1u8; SIZE as usize]).unwrap(), SIZE as usize);
        }
        thread::sleep(Duration::from_millis(40));
    }
    let _s = reader.join().unwrap();
    wait_until(Duration::from_secs(2), "all acked", || outq(&c) == 0);
    // Refreshes up to the first made after the last write: it has every count.
    let done_ns = monotonic_ns();
    loop {
        seen.push(top.next());
        if u(&seen.last().unwrap()["ts_ns"]) > done_ns {
            break;
        }
    }
    let last = seen.last().unwrap().clone();
    seen.extend(top.stop());
    let sender = row(&last, c_ino).unwrap_or_else(|| panic!("no row for {c_ino}: {last}"));
    let receiver = row(&last, s_ino).unwrap_or_else(|| panic!("no row for {s_ino}: {last}"));
    // Where the kernel preempts BPF programs and kprobes have no standby copy (7.3), a run
    // it skipped is counted in `missed`: each count may then fall short by that many calls.
    let missed = u(&last["missed"]);
    agrees(u(&sender["sent_bytes"]), TOTAL, missed, SIZE, "sent bytes");
    agrees(
        u(&sender["sends"]),
        BATCHES * WRITES,
        missed,
        1,
        "one send per write call",
    );
    assert_eq!(u(&sender["eagain"]), 0);
    agrees(
        u(&receiver["received_bytes"]),
        TOTAL,
        missed,
        READ_BUF,
        "received bytes",
    );
    assert_eq!(sender["state"], "ESTABLISHED");
    assert_eq!(
        u(&sender["send_q"]),
        outq(&c),
        "Send-Q as SIOCOUTQ, all acked"
    );
    assert_eq!(sender["comm"], receiver["comm"]);
    // The rates, times each refresh's interval, add up to the bytes (within 5 %), and more
    // than one refresh saw bytes moving.
    let (mut sent, mut moving) = (0.0, 0);
    for v in &seen {
        if let Some(r) = row(v, c_ino) {
            let b = r["send_bytes_per_s"].as_f64().unwrap() * v["interval_s"].as_f64().unwrap();
            sent += b;
            moving += usize::from(b > 0.0);
        }
    }
    let total = TOTAL as f64;
    assert!(
        (sent - total).abs() <= 0.05 * total + (missed * SIZE) as f64,
        "rates add up to {sent:.0} B, the sockets moved {TOTAL} ({missed} runs skipped)"
    );
    assert!(moving >= 2, "bytes seen moving in {moving} refreshes");
}

#[test]
fn top_full_shows_a_stuck_writer_asleep_with_its_send_queue() {
    let run = Top::start(&["--full", "-c", "sbtopstuck"]);
    let (c, s) = tcp_pair();
    let c_ino = ino(&c);
    let writer = {
        let c = c.try_clone().unwrap();
        thread::spawn(move || {
            set_thread_name("sbtopstuck");
            // The peer never reads: this write fills both buffers and sleeps until the
            // test shuts the socket down.
            let _ = (&c).write_all(&vec![0u8; 64 << 20]);
        })
    };
    let mut top = run;
    let t0 = Instant::now();
    let mut asleep_in_a_row = 0;
    let mut last = Value::Null;
    while asleep_in_a_row < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the writer never showed asleep: {last}"
        );
        let v = top.next();
        if let Some(r) = row(&v, c_ino) {
            let pct = r["asleep_pct"].as_f64().expect("asleep_pct with --full");
            asleep_in_a_row = if pct >= 90.0 { asleep_in_a_row + 1 } else { 0 };
            assert!(pct <= 110.0, "one writer asleep: {r}");
            last = r.clone();
        }
    }
    let mss = u64::from(tcp_info(&c).tcpi_snd_mss);
    let (send_q, kernel) = (u(&last["send_q"]), outq(&c));
    assert!(
        send_q.abs_diff(kernel) <= mss,
        "Send-Q {send_q} against SIOCOUTQ {kernel} (one segment: {mss})"
    );
    assert!(
        u(&last["unsent"]) > 0,
        "the peer's window is closed: {last}"
    );
    assert!(
        last["sndbuf_used_pct"].as_f64().unwrap() >= 90.0,
        "the send buffer is full: {last}"
    );
    assert_eq!(last["comm"], "sbtopstuck");
    c.shutdown(Shutdown::Both).unwrap();
    writer.join().unwrap();
    drop(s);
    top.stop();
}

#[test]
fn top_shows_a_socket_stuck_since_before_it_started_with_its_owner() {
    let (c, s) = tcp_pair();
    let port = s.local_addr().unwrap().port().to_string();
    let writer = {
        let c = c.try_clone().unwrap();
        thread::spawn(move || drop((&c).write_all(&vec![0u8; 64 << 20])))
    };
    wait_until(Duration::from_secs(5), "the send buffer full", || {
        outq_unsent(&c) > 0
    });
    thread::sleep(Duration::from_millis(200));
    // No call of the writer's ends while top runs: only the socket table knows the socket,
    // and /proc its owner.
    let mut top = Top::start(&["--port", &port, "-n", "1"]);
    let v = top.next();
    let status = top.child.wait().expect("wait sockbuf top");
    assert!(
        status.success(),
        "-n 1: one refresh, then exit 0; got {status}"
    );
    let r = row(&v, ino(&c)).unwrap_or_else(|| panic!("no row for the stuck socket: {v}"));
    assert_eq!(u(&r["pid"]), u64::from(std::process::id()), "{r}");
    assert_eq!(u(&r["send_q"]), outq(&c), "Send-Q as SIOCOUTQ: {r}");
    assert_eq!(
        u(&r["unsent"]),
        outq_unsent(&c),
        "unsent as SIOCOUTQNSD: {r}"
    );
    assert_eq!(u(&r["sends"]), 0, "{r}");
    let server = row(&v, ino(&s)).unwrap_or_else(|| panic!("no row for the reader: {v}"));
    assert_eq!(u(&server["recv_q"]), inq(&s), "Recv-Q as SIOCINQ: {server}");
    c.shutdown(Shutdown::Both).unwrap();
    writer.join().unwrap();
}

/// A tmux session running a command in a terminal of a known size; killed when dropped.
struct Tmux(&'static str);

impl Tmux {
    fn start(name: &'static str, cmd: &str) -> Self {
        // A session left by an earlier run (none: tmux says so on stderr).
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "200",
                "-y",
                "40",
                cmd,
            ])
            .status()
            .expect("run tmux (installed by cargo xtask test)");
        assert!(ok.success(), "tmux new-session failed");
        Self(name)
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", self.0])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
    }

    fn format(&self, f: &str) -> String {
        let out = Command::new("tmux")
            .args(["display-message", "-p", "-t", self.0, f])
            .output()
            .expect("tmux display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits for the command to exit 0, then checks the terminal is as it was: the normal
    /// screen, the cursor shown.
    fn restored(&self) {
        self.wait("sockbuf top exited", |s| s.contains("EXITED 0"));
        assert_eq!(
            self.format("#{alternate_on}"),
            "0",
            "back on the normal screen"
        );
        assert_eq!(self.format("#{cursor_flag}"), "1", "the cursor shown again");
    }

    /// Waits until the screen satisfies `f`; panics with the screen after `limit`.
    fn wait(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}; the screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", self.0])
            .status();
    }
}

/// The screen line of the row whose local address has `port` (the third column).
fn line_of(screen: &str, port: u16) -> Option<usize> {
    let local = format!(":{port}");
    screen.lines().position(|l| {
        l.split_whitespace()
            .nth(2)
            .is_some_and(|a| a.ends_with(&local))
    })
}

/// The cells of the row whose local address has `port` (no cell here holds a space).
fn cells_of(screen: &str, port: u16) -> Option<Vec<String>> {
    let l = screen.lines().nth(line_of(screen, port)?)?;
    Some(l.split_whitespace().map(str::to_owned).collect())
}

/// Whether the row of local port `a` is above that of `b`, both on the screen.
fn above(screen: &str, a: u16, b: u16) -> bool {
    matches!((line_of(screen, a), line_of(screen, b)), (Some(x), Some(y)) if x < y)
}

#[test]
fn top_screen_sorts_filters_freezes_and_restores_the_terminal() {
    let (mut c, mut s) = tcp_pair();
    let (cport, sport): (u16, u16) = (
        c.local_addr().unwrap().port(),
        s.local_addr().unwrap().port(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        thread::spawn(move || {
            set_thread_name("sbtopwriter");
            while !stop.load(Ordering::Relaxed) {
                c.write_all(&[0u8; 4096]).unwrap();
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let reader = {
        let stop = stop.clone();
        thread::spawn(move || {
            set_thread_name("sbtopreader");
            let mut buf = vec![0u8; 1 << 16];
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let _ = s.read(&mut buf);
            }
        })
    };
    let pid = std::process::id();
    let tmux = Tmux::start(
        "sockbuf_top_test",
        &format!("{SOCKBUF} top -p {pid} --full --interval 300ms; echo EXITED $?; sleep 60"),
    );
    let by_send = tmux.wait("both sockets' rows, the writer's first by SEND/s", |s| {
        s.contains("sort SEND/s") && above(s, cport, sport)
    });
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "1",
        "top draws on the alternate screen"
    );
    // A writer stuck on a peer that never reads, from now on.
    let (stuck, _peer) = tcp_pair();
    let stuck_port = stuck.local_addr().unwrap().port();
    let stuck_writer = {
        let stuck = stuck.try_clone().unwrap();
        thread::spawn(move || drop((&stuck).write_all(&vec![0u8; 64 << 20])))
    };
    // The stuck writer: asleep all along, its Send-Q as SIOCOUTQ (within a segment).
    // Columns: PID COMM LOCAL REMOTE STATE SEND-Q UNSENT INFLIGHT RECV-Q SNDBUF USE% SEND/s
    // RECV/s CALLS/s EAGAIN/s ASLEEP% …
    let screen = tmux.wait("the stuck writer asleep", |s| {
        cells_of(s, stuck_port).is_some_and(|c| c[15].parse::<f64>().is_ok_and(|p| p >= 90.0))
    });
    let cells = cells_of(&screen, stuck_port).unwrap();
    let mss = u64::from(tcp_info(&stuck).tcpi_snd_mss);
    let (shown, kernel) = (cells[5].parse::<u64>().unwrap(), outq(&stuck));
    assert!(
        shown.abs_diff(kernel) <= mss,
        "Send-Q {shown} on the screen, SIOCOUTQ {kernel}:\n{screen}"
    );
    tmux.keys(&["s"]);
    let by_recv = tmux.wait("the reader's first by RECV/s", |s| {
        s.contains("sort RECV/s") && above(s, sport, cport)
    });
    assert!(by_send.contains("SEND-Q") && by_recv.contains("RECV-Q"));
    // By time asleep (three columns on): the stuck writer first; its detail shows its sleep
    // as `trace` prints it.
    tmux.keys(&["s", "s", "s"]);
    tmux.wait("the stuck writer first by ASLEEP%", |s| {
        s.contains("sort ASLEEP%") && above(s, stuck_port, cport)
    });
    tmux.keys(&["Down", "Enter"]);
    tmux.wait("the stuck writer's detail and its sleep", |s| {
        s.contains("recent refreshes and events")
            && s.contains(&format!(":{stuck_port} ->"))
            && s.contains("asleep on a full send buffer")
    });
    tmux.keys(&["Escape"]);
    // A filter (here by comm) leaves the rows it matches.
    tmux.keys(&["/"]);
    tmux.keys(&["sbtopwriter", "Enter"]);
    tmux.wait("only the writer's row", |s| {
        s.contains("filter: sbtopwriter")
            && line_of(s, cport).is_some()
            && line_of(s, sport).is_none()
    });
    tmux.keys(&["Space"]);
    tmux.wait("frozen", |s| s.contains("FROZEN"));
    // A resize redraws to the new size, and q leaves the terminal as it was.
    Command::new("tmux")
        .args([
            "resize-window",
            "-t",
            "sockbuf_top_test",
            "-x",
            "120",
            "-y",
            "30",
        ])
        .status()
        .unwrap();
    tmux.wait("still drawn after the resize", |s| {
        s.lines()
            .next()
            .is_some_and(|l| l.starts_with("sockbuf top"))
            && s.contains("FROZEN")
    });
    tmux.keys(&["q"]);
    tmux.restored();
    let after = tmux.screen();
    assert!(!after.contains("SEND-Q"), "the table is gone:\n{after}");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    reader.join().unwrap();
    stuck.shutdown(Shutdown::Both).unwrap();
    stuck_writer.join().unwrap();
}

#[test]
fn top_screen_leaves_the_terminal_as_it_was_on_sigterm() {
    let pid = std::process::id();
    let tmux = Tmux::start(
        "sockbuf_top_term",
        &format!("{SOCKBUF} top -p {pid} --interval 200ms; echo EXITED $?; sleep 60"),
    );
    tmux.wait("the screen", |s| s.contains("sort SEND/s"));
    assert_eq!(tmux.format("#{alternate_on}"), "1");
    // The tmux pane's shell is top's parent: its child is top.
    let shell = tmux.format("#{pane_pid}");
    let top = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
        .expect("the pane's children");
    let top: i32 = top
        .split_whitespace()
        .next()
        .expect("top running")
        .parse()
        .unwrap();
    unsafe { libc::kill(top, libc::SIGTERM) };
    tmux.restored();
}
