//! strace as the reference: `strace -f -qq -yy -T -e trace=…` into a log, either attached to
//! a running server or running a command, and its log read back call by call.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::Duration,
};

use super::wait_until;

/// One system call strace recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: String,
    /// Its first argument is a TCP socket (`-yy` prints `fd<TCP:[…]>`).
    pub tcp: bool,
    /// The result, `-errno` on failure.
    pub ret: i64,
    /// Its duration (`-T`).
    pub secs: f64,
}

/// `strace` recording `syscalls` (comma-separated) of every thread into `log`; append the
/// command, or `-p PID`.
pub fn command(syscalls: &str, log: &Path) -> Command {
    let mut c = Command::new("strace");
    c.args([
        "-f",
        "-qq",
        "-yy",
        "-T",
        "-e",
        &format!("trace={syscalls}"),
        "-o",
    ])
    .arg(log);
    c
}

/// strace attached to a running process, until [`stop`](Self::stop).
pub struct Attached {
    child: Child,
    log: PathBuf,
}

impl Attached {
    pub fn to(pid: u32, syscalls: &str, log: PathBuf) -> Self {
        let child = command(syscalls, &log)
            .args(["-p", &pid.to_string()])
            .spawn()
            .expect("strace (installed by cargo xtask test's set-up)");
        // strace creates its log once it has attached.
        wait_until(Duration::from_secs(10), "strace to attach", || log.exists());
        thread::sleep(Duration::from_millis(200));
        Self { child, log }
    }

    /// Detaches; every call it recorded, in order.
    pub fn stop(mut self) -> Vec<Call> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        read_log(&self.log)
    }
}

/// The calls in an strace log, in order of their ends (an interrupted call, `<unfinished
/// ...>` then `<... name resumed>`, where it resumed, with its first line's socket).
pub fn read_log(log: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(log).expect("strace log");
    let mut open: HashMap<&str, bool> = HashMap::new();
    let mut calls = Vec::new();
    for l in text.lines() {
        let (pid, rest) = l.split_once(' ').unwrap_or_else(|| bad(l));
        let rest = rest.trim_start();
        if l.ends_with("<unfinished ...>") {
            open.insert(pid, first_arg_is_tcp(rest));
            continue;
        }
        if !l.contains(" = ") {
            continue; // a signal, an exit
        }
        let (name, tcp) = match rest.strip_prefix("<... ") {
            Some(r) => (
                r.split_once(" resumed>").unwrap_or_else(|| bad(l)).0,
                open.remove(pid).unwrap_or(false),
            ),
            None => (
                rest.split_once('(').unwrap_or_else(|| bad(l)).0,
                first_arg_is_tcp(rest),
            ),
        };
        let (_, result) = l.rsplit_once(" = ").unwrap_or_else(|| bad(l));
        let mut w = result.split_whitespace();
        let ret = match w.next() {
            Some("-1") => -errno(w.next().unwrap_or_else(|| bad(l))),
            Some(n) => n.parse().unwrap_or_else(|_| bad(l)),
            None => bad(l),
        };
        let secs = result
            .rsplit_once('<')
            .and_then(|(_, t)| t.strip_suffix('>')?.parse().ok())
            .unwrap_or_else(|| bad(l));
        calls.push(Call {
            name: name.to_owned(),
            tcp,
            ret,
            secs,
        });
    }
    calls
}

fn bad(l: &str) -> ! {
    panic!("strace line: {l}")
}

/// `name(fd<TCP:[…]>, …`: `-yy` names a TCP socket so.
fn first_arg_is_tcp(call: &str) -> bool {
    call.split_once('(')
        .and_then(|(_, args)| args.split(',').next())
        .is_some_and(|a| a.contains("<TCP"))
}

fn errno(name: &str) -> i64 {
    i64::from(match name {
        "EAGAIN" => libc::EAGAIN,
        "EPIPE" => libc::EPIPE,
        "ECONNRESET" => libc::ECONNRESET,
        "EINTR" => libc::EINTR,
        other => panic!("errno {other} unknown to the test"),
    })
}

/// The results of calls named `name` on TCP sockets.
pub fn results(calls: &[Call], name: &str) -> Vec<i64> {
    calls
        .iter()
        .filter(|c| c.tcp && c.name == name)
        .map(|c| c.ret)
        .collect()
}
