//! Receive calls: bytes copied out of the receive buffer and the queue left behind.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use trace_common::{EventKind, RECV_F_UNSEEN, RecvEvent};

use crate::{
    agg, calls, filter,
    kernel::{Access, Fault, IPPROTO_TCP, IPPROTO_UDP, Sock},
    maps::{put_call, take_call},
    model::{comm, emit, header, sock_track, udp_track},
    sk_counts,
};

/// A receive call on `sock` returned `ret` (bytes copied or `-errno`); `typed`: the socket
/// as a typed pointer where the hook has one (it may keep its counts, see `sk_counts`).
#[inline(always)]
pub fn recv_end<A: Access>(
    sock: Sock<A>,
    typed: Option<u64>,
    ret: i64,
    msg_flags: u32,
) -> Result<(), Fault> {
    if recv_counted(sock.ptr, typed, ret) {
        return Ok(());
    }
    recv_traced(sock, ret, msg_flags)
}

/// `--summary` without `--full`: a receive call on `sk` that returned `ret`, counted before
/// anything else is looked up: first the thread's filters, then the socket's own counts
/// (`typed`: `sk` as a typed pointer where the hook has one, see [`sk_counts`]), then its
/// tracking entry. `true`: counted, or filtered out.
#[inline(always)]
pub fn recv_counted(sk: u64, typed: Option<u64>, ret: i64) -> bool {
    let pid_tgid = match agg::counting(ret) {
        agg::Counting::Thread(pid_tgid) => pid_tgid,
        agg::Counting::Out => return true,
        agg::Counting::No => return false,
    };
    if let Some(v) = sk_counts::kept(typed) {
        agg::count_recv_in(&mut v.agg, ret);
        return true;
    }
    let Some(track) = agg::counted_sock(sk) else {
        return false;
    };
    if let Some(a) = sk_counts::make(typed, track, pid_tgid) {
        agg::count_recv_in(a, ret);
        return true;
    }
    agg::recv(track, pid_tgid, ret)
}

/// [`recv_end`] of a call [`recv_counted`] left.
#[inline(always)]
pub fn recv_traced<A: Access>(sock: Sock<A>, ret: i64, msg_flags: u32) -> Result<(), Fault> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::task_passes(pid_tgid) {
        return Ok(());
    }
    let proto = sock.protocol()?;
    if proto == 0 || !filter::sock_passes(&sock)? {
        return Ok(());
    }
    let track = if proto == IPPROTO_UDP {
        unsafe { &*udp_track(&sock)? }
    } else {
        unsafe { &*sock_track(&sock, sock.ino()?, proto)? }
    };
    // A call the summary cannot count (no room for its socket) streams as an event.
    if agg::takes(ret) && agg::recv(track, pid_tgid, ret) {
        return Ok(());
    }
    let queue = sock.recv_queue(proto == IPPROTO_TCP)?;
    let (addrs, id, ino) = (track.addrs, track.id, track.ino);
    let now = unsafe { bpf_ktime_get_ns() };
    let (call, unseen) = calls::piece::<A>(id, ino, 0, now, ret)?;
    emit(|e: &mut RecvEvent| {
        e.hdr = header(EventKind::Recv, pid_tgid, id, ino, now);
        e.comm = comm();
        e.addrs = addrs;
        e.ret = ret;
        e.msg_flags = msg_flags;
        e.protocol = u32::from(proto);
        e.queue = queue;
        e.call = call;
        e.flags = if unseen { RECV_F_UNSEEN } else { 0 };
        e._pad = 0;
    });
    Ok(())
}

/// kprobe backend: a receive call starts; its return probe finds the socket here.
#[inline(always)]
pub fn recv_enter(sk: u64, msg_flags: u32) -> Result<(), Fault> {
    if !filter::current_task_passes() {
        return Ok(());
    }
    put_call(sk, msg_flags)
}

/// kprobe backend: the receive call returns.
#[inline(always)]
pub fn recv_return(ret: i64) -> Result<(), Fault> {
    match take_call() {
        Some(call) => recv_end(Sock::new(call.sk), None, ret, call.flags),
        None => Ok(()),
    }
}
