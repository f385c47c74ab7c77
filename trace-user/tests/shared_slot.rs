//! Two threads whose ids are equal modulo `INFLIGHT_ENTRIES` share a slot of the kernel's
//! array of open send calls: while one sleeps inside its call, the other's call goes to the
//! hash map beside the array. Both must be traced whole (requested, copied, the sleep).

mod common;

use std::{
    io::{Read, Write},
    sync::mpsc,
    thread,
    time::Duration,
};

use common::*;
use trace_common::INFLIGHT_ENTRIES;

type Job = Box<dyn FnOnce() + Send>;

/// A thread whose id is `tid`, waiting for its job: made by setting the pid namespace's last
/// id just below it (`ns_last_pid`, as CRIU does), again when another task took it first.
fn thread_with_tid(tid: u32) -> (thread::JoinHandle<()>, mpsc::Sender<Job>) {
    for _ in 0..100 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (tid - 1).to_string())
            .expect("write /proc/sys/kernel/ns_last_pid (as root)");
        let (id_tx, id_rx) = mpsc::channel();
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let h = thread::spawn(move || {
            id_tx.send(gettid()).unwrap();
            if let Ok(job) = job_rx.recv() {
                job();
            }
        });
        if id_rx.recv().unwrap() == tid {
            return (h, job_tx);
        }
        drop(job_tx);
        h.join().unwrap();
    }
    panic!("no thread got the id {tid} in 100 tries");
}

/// Whether thread `tid` of this process sleeps for send-buffer space, as its kernel stack
/// in /proc says.
fn waits_for_memory(tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stack"))
        .expect("read the thread's kernel stack (as root)")
        .contains("sk_stream_wait_memory")
}

#[test]
fn threads_sharing_a_slot_are_both_traced() {
    const BIG: usize = 1 << 20;
    const SMALL: usize = 1000;
    let pid = std::process::id().to_string();
    let trace = Trace::start(&["-p", &pid]);

    // A: one write far larger than both buffers, to a peer that does not read yet.
    let (mut a, mut a_peer) = tcp_pair_with_buffers(32 << 10, 32 << 10);
    let a_ino = ino(&a);
    let (tx, rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        tx.send(gettid()).unwrap();
        a.write_all(&vec![1u8; BIG]).expect("A's write");
    });
    let a_tid = rx.recv().unwrap();
    wait_until(Duration::from_secs(5), "A asleep for buffer space", || {
        waits_for_memory(a_tid)
    });

    // B: a thread with A's slot, one small write on another connection.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let b_tid = if a_tid > INFLIGHT_ENTRIES {
        a_tid - INFLIGHT_ENTRIES
    } else {
        a_tid + INFLIGHT_ENTRIES
    };
    assert!(b_tid < pid_max, "pid_max {pid_max} leaves no id {b_tid}");
    let (mut b, mut b_peer) = tcp_pair();
    let b_ino = ino(&b);
    let (h, job) = thread_with_tid(b_tid);
    job.send(Box::new(move || {
        assert_eq!(b.write(&[2u8; SMALL]).expect("B's write"), SMALL);
    }))
    .unwrap();
    h.join().expect("B");
    b_peer.read_exact(&mut [0u8; SMALL]).expect("B's bytes");
    assert!(
        waits_for_memory(a_tid),
        "A was still inside its call when B's ended"
    );

    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    while got < BIG {
        got += a_peer.read(&mut buf).expect("A's bytes");
    }
    writer.join().expect("A");
    let out = trace.stop();

    let sends = events(&out, "send", b_ino);
    assert_eq!(sends.len(), 1, "B's one write: {sends:?}");
    let e = sends[0];
    assert_eq!(u(&e["tid"]), u64::from(b_tid), "{e}");
    assert_eq!(u(&e["requested"]), SMALL as u64, "its start was kept: {e}");
    assert_eq!(u(&e["copied"]), SMALL as u64, "{e}");

    let sends = events(&out, "send", a_ino);
    let copied: u64 = sends.iter().map(|e| u(&e["copied"])).sum();
    assert_eq!(copied, BIG as u64, "A's write: {sends:?}");
    for e in &sends {
        assert_eq!(u(&e["tid"]), u64::from(a_tid), "{e}");
        assert_eq!(u(&e["requested"]), BIG as u64, "its start was kept: {e}");
    }
    assert_eq!(sends.last().unwrap()["blocked"], true, "A slept: {sends:?}");
    let blocks = events(&out, "block", a_ino);
    assert!(!blocks.is_empty(), "A's sleeps: none");
    assert_eq!(end(&out)["lost"], 0, "{}", end(&out));
}
