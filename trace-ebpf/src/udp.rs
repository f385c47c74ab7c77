//! UDP: send calls (bytes, flags, corked bytes after the call) and each datagram leaving,
//! which shows when a datagram corked by `MSG_MORE` is finally pushed.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use trace_common::{EventKind, RECV_F_UNSEEN, UdpEvent, calls::CallRef};

use crate::{
    calls, filter,
    kernel::{self, Access, Fault, IPPROTO_UDP, Sock},
    maps::{SockTrack, put_call, take_call},
    model::{comm, emit, header, udp_track},
    syscall,
};

/// Whether the port filter passes a datagram of `sock`: its ports now (a `connect()`
/// changes them), the peer's being, for an unconnected socket, the destination's the send
/// call named.
#[inline(always)]
fn passes<A: Access>(sock: &Sock<A>) -> Result<bool, Fault> {
    let rport = match sock.rport()? {
        0 => syscall::send_dest_port()?,
        p => p,
    };
    Ok(filter::ports_pass(sock.lport()?, rport))
}

/// Emits a UDP event: `ret` is the call's result (`UdpSend`) or the datagram's payload
/// (`UdpOut`); the cork and memory figures are read now. An unconnected socket's peer is
/// the destination the send call named.
#[inline(always)]
fn emit_udp<A: Access>(
    kind: EventKind,
    sock: &Sock<A>,
    track: &SockTrack,
    pid_tgid: u64,
    ret: i64,
    msg_flags: u32,
) -> Result<(), Fault> {
    let now = unsafe { bpf_ktime_get_ns() };
    // A send call is (a piece of) the application's call; a datagram leaving is not one.
    let (call, unseen) = if kind == EventKind::UdpSend {
        calls::piece::<kernel::Probe>(track.id, track.ino, 0, now, ret)?
    } else {
        (CallRef::default(), false)
    };
    let (pending, corked) = sock.udp_cork()?;
    let sndbuf = sock.sndbuf()?;
    let wmem_alloc = sock.wmem_alloc()?;
    let (id, ino) = (track.id, track.ino);
    let dest = if track.addrs.rport == 0 {
        syscall::send_dest()?
    } else {
        None
    };
    emit(|e: &mut UdpEvent| {
        e.hdr = header(kind, pid_tgid, id, ino, now);
        e.comm = comm();
        e.addrs = track.addrs;
        if let Some((addr, port)) = dest {
            e.addrs.daddr = addr;
            e.addrs.rport = port;
        }
        e.ret = ret;
        e.msg_flags = msg_flags;
        e.sndbuf = sndbuf;
        e.wmem_alloc = wmem_alloc;
        e.corked = corked;
        e.pending = pending;
        e.flags = if unseen { RECV_F_UNSEEN } else { 0 };
        e.call = call;
    });
    Ok(())
}

/// A send call on UDP socket `sock` returned `ret`; the task already passed the filters.
#[inline(always)]
pub fn send_end<A: Access>(
    sock: &Sock<A>,
    pid_tgid: u64,
    ret: i64,
    msg_flags: u32,
) -> Result<(), Fault> {
    if !passes(sock)? {
        return Ok(());
    }
    let track = udp_track(sock)?;
    emit_udp(
        EventKind::UdpSend,
        sock,
        unsafe { &*track },
        pid_tgid,
        ret,
        msg_flags,
    )
}

/// Function backends: `udp_sendmsg`/`udpv6_sendmsg` returned `ret`.
#[inline(always)]
pub fn send_done(sk: u64, msg_flags: u32, ret: i64) -> Result<(), Fault> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::task_passes(pid_tgid) {
        return Ok(());
    }
    let sock = Sock::new(sk);
    if sock.protocol()? != IPPROTO_UDP {
        return Ok(());
    }
    send_end(&sock, pid_tgid, ret, msg_flags)
}

/// kprobe backend: a UDP send call starts; its return probe finds the socket here.
#[inline(always)]
pub fn send_enter(sk: u64, msg: u64) -> Result<(), Fault> {
    if !filter::current_task_passes() {
        return Ok(());
    }
    put_call(sk, kernel::msg_flags(msg)?)
}

/// kprobe backend: the UDP send call returns.
#[inline(always)]
pub fn send_return(ret: i64) -> Result<(), Fault> {
    match take_call() {
        Some(call) => send_done(call.sk, call.flags, ret),
        None => Ok(()),
    }
}

/// A datagram of tracked UDP socket `sock` goes to the device; `th` is its UDP header.
/// In the sender's context: UDP transmits inside the send call.
#[inline(always)]
pub fn out<A: Access>(sock: &Sock<A>, track: *mut SockTrack, th: u64) -> Result<(), Fault> {
    if !passes(sock)? {
        return Ok(());
    }
    sock.read_addrs(unsafe { &mut (*track).addrs })?;
    let payload = kernel::udph_payload(th)?;
    emit_udp(
        EventKind::UdpOut,
        sock,
        unsafe { &*track },
        bpf_get_current_pid_tgid(),
        i64::from(payload),
        0,
    )
}

/// A packet of a socket sockbuf does not track: a UDP socket's first datagram leaves inside
/// its first send call, before that call's return could start tracking it.
#[inline(always)]
pub fn untracked_out<A: Access>(sk: u64, skb: u64) -> Result<(), Fault> {
    if !filter::current_task_passes() {
        return Ok(());
    }
    let sock = Sock::new(sk);
    // A UDP socket is CLOSE or ESTABLISHED (connected); anything else may be a request or
    // time-wait socket, which has no protocol field to read.
    if !matches!(sock.state()?, 1 | 7) || sock.protocol()? != IPPROTO_UDP {
        return Ok(());
    }
    if !passes(&sock)? {
        return Ok(());
    }
    let track = udp_track(&sock)?;
    out(&sock, track, kernel::skb_transport::<A>(skb)?)
}
