//! Send calls seen at the syscall's entry, for kernels without the `tcp_sendmsg_locked`
//! tracepoint (before 6.13?): `write`, `writev`, `sendto` and `sendmsg` on a TCP socket open a
//! call as `model::send_begin` does; the scheduler says when the sleeping writer runs again.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use trace_common::{SEND_F_REQUESTED, SEND_F_TCP_BYTES, SendQueue, StackIds};

use crate::{
    filter, inflight,
    kernel::{self, Fault, IPPROTO_TCP, Sock},
    layer,
    maps::{Inflight, SOCKS},
    model::{close_block_of, open_call},
    syscall,
};

const MSG_DONTWAIT: u32 = 0x40;

/// A send syscall on `fd` starts: `requested` bytes (when known), with `flags`; its event
/// flagged `extra`.
#[inline(always)]
pub fn send_begin_fd(fd: u64, requested: Option<u64>, flags: u32, extra: u32) -> Result<(), Fault> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::task_passes(pid_tgid) {
        return Ok(());
    }
    let Some((sk, nonblocking)) = kernel::fd_sock(fd)? else {
        return Ok(());
    };
    let sock = Sock::new(sk);
    if sock.protocol()? != IPPROTO_TCP || !filter::sock_passes(&sock)? {
        return Ok(());
    }
    // Seen from the syscall's entry: `write_seq` now tells what entered TCP.
    let known = SEND_F_TCP_BYTES | extra;
    let call = Inflight {
        sk,
        msg: 0,
        seq0: sock.write_seq()?,
        tid: 0,
        id: 0,
        ino: 0,
        start_ns: unsafe { bpf_ktime_get_ns() },
        requested: requested.unwrap_or(0),
        // As sock_write_iter does for a non-blocking file.
        msg_flags: flags | if nonblocking { MSG_DONTWAIT } else { 0 },
        flags: known
            | if requested.is_some() {
                SEND_F_REQUESTED
            } else {
                0
            },
        block_start: 0,
        block_left: 0,
        block_queue: SendQueue::default(),
        block_stacks: StackIds::NONE,
    };
    open_call(&sock, pid_tgid as u32, call, SOCKS.get_ptr_mut(sk))
}

/// Whether `fd` is a TCP socket with a layer above TCP (see `layer`).
#[inline(always)]
pub fn layered_fd(fd: u64) -> Result<bool, Fault> {
    let Some((sk, _)) = kernel::fd_sock(fd)? else {
        return Ok(false);
    };
    let sock = Sock::new(sk);
    Ok(sock.protocol()? == IPPROTO_TCP && layer::layered(&sock)?)
}

/// `sendmsg`/`writev`: the bytes an user iovec array asks for.
#[inline(always)]
pub fn iov_requested(iov: u64, n: u64) -> Option<u64> {
    syscall::user_iov_len(iov, n)
}

/// `sendmsg(fd, msg, flags)`: the msghdr is in user memory.
#[inline(always)]
pub fn msghdr_requested(msg: u64) -> Option<u64> {
    let (iov, n) = syscall::user_msghdr_iov(msg)?;
    syscall::user_iov_len(iov, n)
}

/// The scheduler switches to `next`: if it sleeps in a traced send call, it woke up.
#[inline(always)]
pub fn task_wakes(next: u64) -> Result<(), Fault> {
    let tid = kernel::task_tid(next)?;
    let Some(call) = inflight::get(tid) else {
        return Ok(());
    };
    let call = unsafe { &mut *call };
    if call.block_start == 0 {
        return Ok(());
    }
    let (pid_tgid, comm) = kernel::task_ids(next)?;
    close_block_of(call, pid_tgid, comm, unsafe { bpf_ktime_get_ns() });
    Ok(())
}
