//! Programs preempted in the middle of a count. Where the kernel runs BPF programs
//! preemptibly (7.3 in the matrix), a thread preempted inside a program leaves it busy on its
//! CPU; another thread's call on the same socket is then counted by the standby copy, into
//! the same per-CPU `--summary` entry. A count added as load, add, store by the preempted one
//! would overwrite the copy's: the totals must still equal the threads' own.

mod common;

use std::{
    io::{Read, Write},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use common::{summary::SummaryRun, *};

/// How long the writers run: under emulation, a few hundred preemptions inside a program.
const RUN: Duration = Duration::from_secs(8);
const WRITERS: usize = 3;
const SIZE: usize = 64;

/// Binds the calling thread to CPU 0: every thread of the test preempts the others there.
fn on_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("CPU 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin to CPU 0");
}

#[test]
fn summary_counts_stay_exact_with_writers_preempted_on_one_cpu() {
    let pid = std::process::id().to_string();
    let run = SummaryRun::start(&["-p", &pid]);
    let (c, mut s) = tcp_pair();
    c.set_nodelay(true).expect("nodelay");
    let (c_ino, s_ino) = (ino(&c), ino(&s));
    let reader = thread::spawn(move || {
        on_cpu0();
        let mut buf = vec![0u8; 1 << 16];
        let (mut bytes, mut calls) = (0u64, 0u64);
        loop {
            let n = s.read(&mut buf).expect("read");
            calls += 1;
            if n == 0 {
                return (bytes, calls);
            }
            bytes += n as u64;
        }
    });
    let c = Arc::new(c);
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                on_cpu0();
                let chunk = [7u8; SIZE];
                let (mut calls, mut bytes) = (0u64, 0u64);
                let until = Instant::now() + RUN;
                while Instant::now() < until {
                    bytes += (&*c).write(&chunk).expect("write") as u64;
                    calls += 1;
                }
                (calls, bytes)
            })
        })
        .collect();
    let (mut calls, mut bytes) = (0, 0);
    for w in writers {
        let (n, b) = w.join().expect("writer");
        calls += n;
        bytes += b;
    }
    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let (read, reads) = reader.join().expect("reader");
    assert_eq!(read, bytes, "the reader got every byte");
    let (rows, end) = run.stop();
    let row = |ino: u64| {
        rows.iter()
            .find(|r| u(&r["sock_id"]) == ino)
            .unwrap_or_else(|| panic!("no row of socket {ino}: {rows:?}"))
    };
    let (w, r) = (row(c_ino), row(s_ino));
    eprintln!(
        "{WRITERS} writers: {calls} calls; reader {reads} calls; missed {}",
        end["missed"]
    );
    // A run neither program nor copy took is counted as missed (any program's); no count
    // may vanish otherwise.
    let (sends, missed) = (u(&w["sends"]), u(&end["missed"]));
    // Every row's sends, should a count land elsewhere: (sock_id, ino, sends).
    let others: Vec<(u64, u64, u64)> = rows
        .iter()
        .filter(|r| r["sends"].as_u64().unwrap_or(0) > 0)
        .map(|r| (u(&r["sock_id"]), u(&r["ino"]), u(&r["sends"])))
        .collect();
    assert!(
        sends <= calls && calls - sends <= missed,
        "{calls} send calls, {sends} counted, {missed} missed: {w} {end}; rows with sends: {others:?}"
    );
    if missed == 0 {
        assert_eq!(u(&w["copied_bytes"]), bytes, "{w}");
        assert_eq!(u(&r["recvs"]), reads, "{r}");
        assert_eq!(u(&r["received_bytes"]), bytes, "{r}");
    }
}
