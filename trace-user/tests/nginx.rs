//! A real server sockbuf's users run: Debian's nginx with `sendfile on`, serving a 50 MB file
//! to a rate-limited curl (so its non-blocking `sendfile()` meets full buffers) and 2 000
//! small requests on one connection, traced by sockbuf and by `strace -f` at once: the
//! traced `sendfile()` and `writev()` calls, their results and EAGAINs equal strace's, and
//! every byte nginx wrote is acked.

mod common;

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{
    guard::{Running, ScratchDir},
    summary::SummaryRun,
    *,
};
use serde_json::Value;

const BIG: usize = 50_000_000;
const SMALL: usize = 3_000;
const REQUESTS: usize = 2_000;

/// An nginx of the test's own (one process, so one pid to trace) in a directory of its own,
/// both gone when dropped.
struct Nginx {
    // Fields drop in order: the server stops before its directory goes.
    server: Running,
    dir: ScratchDir,
    port: u16,
}

impl Nginx {
    fn start() -> Self {
        let dir = ScratchDir::new("nginx");
        let www = dir.join("www");
        std::fs::create_dir_all(&www).expect("nginx dir");
        std::fs::write(www.join("big"), vec![b'b'; BIG]).unwrap();
        std::fs::write(www.join("small"), vec![b's'; SMALL]).unwrap();
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
             error_log {d}/error.log; events {{ worker_connections 64; }}
             http {{ access_log off; sendfile on; keepalive_requests 100000;
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
               uwsgi_temp_path {d}; scgi_temp_path {d};
               server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let server = Running::spawn(
            Command::new("nginx")
                .args(["-c", &format!("{d}/nginx.conf"), "-p", &d.to_string()])
                .stderr(Stdio::inherit()),
            "nginx",
        );
        let n = Self { server, dir, port };
        wait_until(Duration::from_secs(10), "nginx to answer", || {
            n.get("small", &[]).is_some_and(|s| s == SMALL as u64)
        });
        n
    }

    /// Fetches `path` with curl and `args`; the bytes it downloaded.
    fn get(&self, path: &str, args: &[&str]) -> Option<u64> {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{size_download}"])
            .args(args)
            .arg(format!("http://127.0.0.1:{}/{path}", self.port))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).parse().ok()
    }
}

/// Results of the traced application calls of `syscall`: its `call` events (`by_call`:
/// sendfile), or its sends, each a call of its own (writev).
fn traced(out: &[Value], syscall: &str, by_call: bool) -> Vec<i64> {
    let kind = if by_call { "call" } else { "send" };
    out.iter()
        .filter(|e| e["syscall"] == syscall && e["kind"] == kind)
        .map(|e| e["ret"].as_i64().unwrap())
        .collect()
}

#[test]
fn nginx_sendfile_calls_equal_strace_and_every_byte_is_acked() {
    let nginx = Nginx::start();
    let pid = nginx.server.pid();
    let strace = strace::Attached::to(pid, "sendfile,writev", nginx.dir.join("strace.log"));
    let trace = Trace::start(&["-p", &pid.to_string()]);
    let summary = SummaryRun::start(&["-p", &pid.to_string()]);
    assert_eq!(nginx.get("big", &["--limit-rate", "25M"]), Some(BIG as u64));
    // One curl, one keep-alive connection, 2 000 requests.
    let config = nginx.dir.join("curl.conf");
    let urls: String = (0..REQUESTS)
        .map(|i| {
            format!(
                "url = \"http://127.0.0.1:{}/small?{i}\"\noutput = \"/dev/null\"\n",
                nginx.port
            )
        })
        .collect();
    std::fs::write(&config, urls).unwrap();
    let curl = Command::new("curl")
        .args(["-s", "-w", "%{size_download}\\n", "-K"])
        .arg(&config)
        .output()
        .expect("curl");
    let sizes = String::from_utf8_lossy(&curl.stdout);
    assert!(
        sizes.lines().all(|l| l == SMALL.to_string()) && sizes.lines().count() == REQUESTS,
        "curl's sizes: {sizes}"
    );
    thread::sleep(Duration::from_millis(300));
    let out = trace.stop();
    let (summary, _) = summary.stop_whole();
    let calls = strace.stop();
    let sendfile = strace::results(&calls, "sendfile");
    let writev = strace::results(&calls, "writev");
    assert!(curl.status.success(), "curl: {curl:?}");
    let eagains = sendfile.iter().filter(|r| **r == -11).count();
    assert!(
        eagains > 0,
        "the rate-limited curl made nginx meet EAGAIN: {sendfile:?}"
    );
    assert_eq!(
        sendfile.iter().filter(|r| **r > 0).sum::<i64>(),
        (BIG + REQUESTS * SMALL) as i64,
        "strace's sendfile bytes"
    );
    assert_eq!(
        traced(&out, "sendfile", true),
        sendfile,
        "sendfile results: sockbuf vs strace"
    );
    assert_eq!(
        traced(&out, "writev", false),
        writev,
        "writev results: sockbuf vs strace"
    );
    let end = end(&out);
    assert_eq!(
        u(&end["unacked"]),
        0,
        "curl read everything: every write acked: {end}"
    );
    // Each kernel EAGAIN is either one nginx got or flagged as one it never saw.
    let kernel_eagains = out
        .iter()
        .filter(|e| e["kind"] == "send" && e["ret"] == -11)
        .count();
    let unseen = out.iter().filter(|e| e["unseen_error"] == true).count();
    assert_eq!(kernel_eagains, eagains + unseen, "EAGAINs: {end}");
    // --summary counts the same calls in the kernel, EAGAINs as nginx got them.
    let t = &summary["totals"];
    assert_eq!(
        (
            u(&t["pieced_calls"]),
            u(&t["eagain"]),
            u(&t["unseen_errors"])
        ),
        (sendfile.len() as u64, eagains as u64, unseen as u64),
        "--summary's sendfile calls, EAGAINs and unseen errors: {t}"
    );
    let pieces = out
        .iter()
        .filter(|e| e["kind"] == "send" && e["syscall"] == "sendfile")
        .count();
    eprintln!(
        "nginx: {} sendfile() ({eagains} EAGAIN) in {pieces} kernel sends ({kernel_eagains} \
         EAGAIN, {unseen} unseen), {} writev(), equal to strace; {} writes acked, 0 unacked",
        sendfile.len(),
        writev.len(),
        u(&end["acks"])
    );
}
