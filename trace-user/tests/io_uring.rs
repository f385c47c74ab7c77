//! io_uring sends (`SEND`, `SEND_ZC`, `SENDMSG`) and receives: no syscall per operation, yet each reaches TCP as a kernel
//! send or receive that sockbuf sees. A send done inline names the `io_uring_enter` it was
//! submitted in; one forced to an io-wq worker (`IOSQE_ASYNC`) names no syscall (`none`),
//! from the worker thread. Traced results equal the completions the program reaped.

mod common;

use std::{io::Read, os::fd::AsRawFd};

use common::*;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use serde_json::Value;

/// Submits `sqe` and waits for its completion; its result (and, for `SEND_ZC`, waits for the
/// notification that the kernel is done with the buffer too).
fn complete(ring: &mut IoUring, sqe: squeue::Entry) -> i32 {
    unsafe { ring.submission().push(&sqe).expect("queue full") };
    ring.submit_and_wait(1).expect("io_uring_enter");
    let cqe = ring.completion().next().expect("a completion");
    if cqueue::more(cqe.flags()) {
        ring.submit_and_wait(1).expect("io_uring_enter");
        let notif = ring.completion().next().expect("the notification");
        assert!(cqueue::notif(notif.flags()));
    }
    cqe.result()
}

#[test]
fn io_uring_sends_and_receives_are_traced_with_their_origin() {
    let (client, mut server) = tcp_pair();
    let ino = ino(&client);
    let server_ino = common::ino(&server);
    let fd = types::Fd(client.as_raw_fd());
    let mut ring = IoUring::new(8).expect("io_uring_setup");
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let buf = vec![b'u'; 3000];
    let mut results = Vec::new();
    // Inline, forced to a worker, zero-copy; three of each.
    for k in 0..3u32 {
        let len = 1000 + k * 500;
        let send = opcode::Send::new(fd, buf.as_ptr(), len).build();
        results.push(("io_uring_enter", complete(&mut ring, send)));
        let forced = opcode::Send::new(fd, buf.as_ptr(), len)
            .build()
            .flags(squeue::Flags::ASYNC);
        results.push(("none", complete(&mut ring, forced)));
        let zc = opcode::SendZc::new(fd, buf.as_ptr(), len).build();
        results.push(("io_uring_enter", complete(&mut ring, zc)));
    }
    // IORING_OP_SENDMSG: a msghdr of two iovecs.
    let iovs = [
        libc::iovec {
            iov_base: buf.as_ptr() as *mut _,
            iov_len: 600,
        },
        libc::iovec {
            iov_base: buf.as_ptr() as *mut _,
            iov_len: 400,
        },
    ];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovs.as_ptr() as *mut _;
    msg.msg_iovlen = 2;
    let sendmsg = opcode::SendMsg::new(fd, &raw const msg).build();
    results.push(("io_uring_enter", complete(&mut ring, sendmsg)));
    let total: i32 = results.iter().map(|(_, r)| *r).sum();
    let mut got = vec![0u8; total as usize];
    server.read_exact(&mut got).unwrap();
    // And the other way: the server writes, an io_uring receive reads.
    std::io::Write::write_all(&mut server, &[b'r'; 700]).unwrap();
    let mut rbuf = vec![0u8; 4096];
    let recv = opcode::Recv::new(fd, rbuf.as_mut_ptr(), rbuf.len() as u32).build();
    let received = complete(&mut ring, recv);
    let out = trace.stop();
    let sends = events(&out, "send", ino);
    let traced: Vec<(&str, i64)> = sends
        .iter()
        .map(|s| (s["syscall"].as_str().unwrap(), s["ret"].as_i64().unwrap()))
        .collect();
    let expected: Vec<(&str, i64)> = results.iter().map(|(s, r)| (*s, i64::from(*r))).collect();
    assert_eq!(
        traced, expected,
        "(origin, result) of each send: sockbuf vs completions"
    );
    for s in &sends {
        let worker = s["syscall"] == "none";
        assert_eq!(
            s["comm"].as_str().unwrap().starts_with("iou-wrk"),
            worker,
            "a worker's send is the worker thread's: {s}"
        );
        assert_eq!(u(&s["pid"]), u64::from(std::process::id()), "{s}");
    }
    let recvs: Vec<&Value> = events(&out, "recv", ino);
    assert_eq!(recvs.len(), 1, "{recvs:?}");
    assert_eq!(recvs[0]["ret"].as_i64(), Some(i64::from(received)));
    assert_eq!(received, 700);
    // Every byte sent was read, so every write is acked.
    let acks = events(&out, "ack", ino).len();
    assert_eq!(acks, sends.len(), "acks of {ino} (peer {server_ino})");
}
