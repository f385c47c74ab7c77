//! A TCP connection's lifecycle: state changes, RSTs sent and received, FINs leaving and
//! arriving. Shared by every backend: the hooks are tracepoints every supported kernel has.
//!
//! Which sockets: those already tracked (a traced send or receive, or an earlier lifecycle
//! event), and new ones when the event runs in the task that caused it (`close()`,
//! `connect()`) and that task passes the filters. Events driven by an arriving packet run in
//! whatever task was interrupted, so they start tracking a socket only when no task filter is
//! set.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use trace_common::{
    COMM_LEN, EventKind, RecvQueue, SendQueue, SockEvent,
    tcp_state::{
        self, CLOSE, CLOSE_WAIT, CLOSING, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, LAST_ACK, LISTEN,
        SYN_RECV, SYN_SENT,
    },
};

use crate::{
    agg, filter,
    kernel::{self, Access, Fault, IPPROTO_TCP, IPPROTO_UDP, Probe, Sock},
    maps::{SOCKS, SockTrack, TIMEWAIT, TimeWait},
    model::{comm, emit, header, known_track, sock_track},
    sk_counts,
};

/// `skc_state` is a byte.
const TCP_TIME_WAIT: u8 = tcp_state::TIME_WAIT as u8;
const TCP_NEW_SYN_RECV: u8 = tcp_state::NEW_SYN_RECV as u8;

/// Where an event comes from, which decides how an untracked socket may be taken up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The task that caused it (a syscall): task filters apply.
    Task,
    /// An arriving packet (softirq): the current task means nothing.
    Packet,
}

/// The tracking entry of a TCP socket an event concerns, or `None` when it is not traced.
#[inline(always)]
fn tracked<A: Access>(sock: &Sock<A>, ctx: Context) -> Result<Option<*mut SockTrack>, Fault> {
    let ino = sock.ino()?;
    if let Some(t) = known_track(sock, ino)? {
        return Ok(Some(t));
    }
    let may_start = match ctx {
        Context::Task => filter::current_task_passes(),
        Context::Packet => filter::no_task_filter(),
    };
    if !may_start || sock.protocol()? != IPPROTO_TCP || !filter::sock_passes(sock)? {
        return Ok(None);
    }
    Ok(Some(sock_track(sock, ino, IPPROTO_TCP)?))
}

/// Emits a lifecycle event with both queues as they are now.
#[inline(always)]
fn emit_sock<A: Access>(
    kind: EventKind,
    sock: &Sock<A>,
    track: &SockTrack,
    ctx: Context,
    fill: impl FnOnce(&mut SockEvent),
) -> Result<(), Fault> {
    let send = sock.send_queue()?;
    let recv = sock.recv_queue(true)?;
    let state = u32::from(sock.state()?);
    // In softirq the current task is whichever was interrupted: name none.
    let (pid_tgid, comm) = match ctx {
        Context::Task => (bpf_get_current_pid_tgid(), comm()),
        Context::Packet => (0, [0; COMM_LEN]),
    };
    let (addrs, id, ino) = (track.addrs, track.id, track.ino);
    emit(|e: &mut SockEvent| {
        e.hdr = header(kind, pid_tgid, id, ino, unsafe { bpf_ktime_get_ns() });
        e.comm = comm;
        e.addrs = addrs;
        e.old_state = 0;
        e.new_state = state;
        e.reason = 0;
        e._pad = 0;
        e.seq = 0;
        e.send = send;
        e.recv = recv;
        fill(e);
    });
    Ok(())
}

/// A FIN arriving or leaving (`kind`), after `seq` bytes of the stream in its direction.
/// In softirq or on a packet's way out: no task is named.
#[inline(always)]
fn emit_fin<A: Access>(
    kind: EventKind,
    sock: &Sock<A>,
    track: &SockTrack,
    seq: u64,
) -> Result<(), Fault> {
    emit_sock(kind, sock, track, Context::Packet, |e| e.seq = seq)
}

/// `inet_sock_set_state(sk, old, new)`. Runs in the task for `connect()`/`close()`, in
/// softirq for changes an arriving segment causes; the tracepoint does not say which, so the
/// task-filter rule (see the module) decides by the state it moves to. `typed`: `sk` as a
/// typed pointer where the hook has one (the socket may keep its counts, see `sk_counts`).
#[inline(always)]
pub fn state(sk: u64, typed: Option<u64>, old: u32, new: u32) -> Result<(), Fault> {
    // `--summary` without `--full` follows a connection from ESTABLISHED (its side: from
    // SYN_SENT a client, from SYN_RECV a server) to CLOSE (which frees its counts): under
    // churn the other changes would triple the ring's records for nothing it reports.
    if matches!((old, new), (LISTEN, SYN_RECV) | (CLOSE, SYN_SENT)) {
        close_stale(sk);
    }
    if agg::counts_only() && new != ESTABLISHED && new != CLOSE {
        return Ok(());
    }
    let sock = Sock::new(sk);
    // SYN_SENT (connect), FIN_WAIT1 and LAST_ACK (close), CLOSE from CLOSE_WAIT/ESTABLISHED
    // (close with unread data) are a syscall's; the rest follow a packet or a timer.
    let ctx = match (old, new) {
        (_, SYN_SENT | FIN_WAIT1 | LAST_ACK | LISTEN)
        | (ESTABLISHED | CLOSE_WAIT | LISTEN, CLOSE) => Context::Task,
        _ => Context::Packet,
    };
    let Some(track) = tracked(&sock, ctx)? else {
        return Ok(());
    };
    if new == ESTABLISHED {
        // connect() enters SYN_SENT before it picks the local port: cache the final ones.
        unsafe { (*track).addrs = sock.addrs()? };
    }
    if !agg::counts_only() {
        match fin_arrived(&sock, old, new)? {
            Fin::Arrived => {
                // Its data and the FIN received: the FIN took the last sequence number.
                let seq = sock.recv_queue(true)?.received.saturating_sub(1);
                emit_fin(EventKind::FinIn, &sock, unsafe { &*track }, seq)?;
            }
            Fin::Later => {
                let t = unsafe { &*track };
                let tw = TimeWait {
                    id: t.id,
                    ino: t.ino,
                    received: sock.recv_queue(true)?.received,
                };
                let _ = TIMEWAIT.insert(t.addrs, tw, 0);
            }
            Fin::No => {}
        }
    }
    if new == CLOSE {
        // Before the event: userspace takes the socket's counts out when it reads it.
        agg::closed(&sock, unsafe { &*track })?;
        sk_counts::close(typed);
    }
    emit_sock(EventKind::State, &sock, unsafe { &*track }, ctx, |e| {
        e.old_state = old;
        e.new_state = new;
    })?;
    if new == CLOSE {
        // The end of the connection: a later struct sock at this address is another socket.
        let _ = SOCKS.remove(sk);
    }
    Ok(())
}

/// A socket's life starts at `sk` (`connect()`, or a connection request's new socket): a
/// tracking entry still there belongs to a socket that ended without sockbuf seeing its
/// CLOSE (a run the kernel skipped, or a UDP socket, which has none). It is closed now, as
/// `UNKNOWN → CLOSE` with empty queues, so that userspace takes its counts out, and the new
/// socket gets an id of its own instead of taking the old one's.
#[inline(always)]
fn close_stale(sk: u64) {
    let Some(stale) = SOCKS.get_ptr(sk) else {
        return;
    };
    let (addrs, id, ino) = unsafe { ((*stale).addrs, (*stale).id, (*stale).ino) };
    // The same socket, met before its connect() (a call that failed on it).
    if ino != 0 && Sock::new(sk).ino().is_ok_and(|now| now == ino) {
        return;
    }
    agg::forget(id);
    emit(|e: &mut SockEvent| {
        e.hdr = header(EventKind::State, 0, id, ino, unsafe { bpf_ktime_get_ns() });
        e.comm = [0; COMM_LEN];
        e.addrs = addrs;
        e.old_state = 0;
        e.new_state = CLOSE;
        e.reason = 0;
        e._pad = 0;
        e.seq = 0;
        e.send = SendQueue::default();
        e.recv = RecvQueue::default();
    });
    let _ = SOCKS.remove(sk);
}

/// What a state change says of the peer's FIN.
enum Fin {
    /// It reached a socket that closed (or shut its sending side) first, where no ACK hook
    /// runs: FIN_WAIT1 → CLOSING, or FIN_WAIT2 → CLOSE with the FIN received.
    Arrived,
    /// Not yet, and it never will reach this socket: FIN_WAIT2 → CLOSE without it is a
    /// socket `close()` orphaned turning time-wait as soon as its own FIN was acked (or a
    /// RST's or the FIN_WAIT2 timer's CLOSE). The FIN reaches the time-wait socket
    /// ([`timewait_segment`]).
    Later,
    No,
}

#[inline(always)]
fn fin_arrived<A: Access>(sock: &Sock<A>, old: u32, new: u32) -> Result<Fin, Fault> {
    Ok(match (old, new) {
        (FIN_WAIT1, CLOSING) => Fin::Arrived,
        (FIN_WAIT2, CLOSE) if sock.fin_received()? => Fin::Arrived,
        (FIN_WAIT2, CLOSE) => Fin::Later,
        _ => Fin::No,
    })
}

/// `tcp_timewait_state_process(tw, skb, th, …)` (function backends: no tracepoint runs
/// there): a segment reaches a time-wait socket. Its FIN is the peer's, after a socket that
/// `close()` orphaned turned time-wait ([`Fin::Later`]); the same socket's id, no task (a
/// softirq), no queues (the socket is gone), the new state TIME_WAIT.
#[inline(always)]
pub fn timewait_segment(tw: u64, th: u64) -> Result<(), Fault> {
    if !kernel::tcph_fin(th)? {
        return Ok(());
    }
    // The time-wait socket begins with the same `sock_common` as the socket it replaced.
    let addrs = Sock::new(tw).addrs()?;
    let Some(t) = (unsafe { TIMEWAIT.get(addrs) }).copied() else {
        return Ok(());
    };
    // Once: a FIN sent again (its ACK lost) is not another FIN.
    let _ = TIMEWAIT.remove(addrs);
    emit(|e: &mut SockEvent| {
        e.hdr = header(EventKind::FinIn, 0, t.id, t.ino, unsafe {
            bpf_ktime_get_ns()
        });
        e.comm = [0; COMM_LEN];
        e.addrs = addrs;
        e.old_state = 0;
        e.new_state = u32::from(TCP_TIME_WAIT);
        e.reason = 0;
        e._pad = 0;
        e.seq = t.received;
        e.send = SendQueue::default();
        e.recv = RecvQueue {
            received: t.received,
            ..RecvQueue::default()
        };
    });
    Ok(())
}

/// `tcp_send_reset(sk, skb[, reason])`: a RST leaves. `sk` is NULL for a reply to a segment
/// no socket owns, and may be a time-wait or request socket, which have no send queue.
#[inline(always)]
pub fn rst_out(sk: u64, reason: u32) -> Result<(), Fault> {
    if sk == 0 {
        return Ok(());
    }
    let sock = Sock::new(sk);
    let st = sock.state()?;
    if st == TCP_TIME_WAIT || st == TCP_NEW_SYN_RECV {
        return Ok(());
    }
    // An active reset (close with unread data, abort) runs in the closing task.
    let Some(track) = tracked(&sock, Context::Task)? else {
        return Ok(());
    };
    emit_sock(
        EventKind::RstOut,
        &sock,
        unsafe { &*track },
        Context::Task,
        |e| {
            e.reason = reason;
        },
    )
}

/// `tcp_receive_reset(sk)`: the peer reset the connection.
#[inline(always)]
pub fn rst_in(sk: u64) -> Result<(), Fault> {
    let sock = Sock::new(sk);
    let Some(track) = tracked(&sock, Context::Packet)? else {
        return Ok(());
    };
    emit_sock(
        EventKind::RstIn,
        &sock,
        unsafe { &*track },
        Context::Packet,
        |_| {},
    )
}

/// A segment arriving on a tracked socket: says so when it carries the peer's FIN.
#[inline(always)]
pub fn fin_in<A: Access>(sock: &Sock<A>, track: &SockTrack, skb: u64) -> Result<(), Fault> {
    let Some(fin_seq) = kernel::skb_fin_seq::<A>(skb)? else {
        return Ok(());
    };
    // Data bytes before the FIN: all received so far, plus what lies between rcv_nxt and it.
    let recv = sock.recv_queue(true)?;
    let seq = recv.received + u64::from(fin_seq.wrapping_sub(sock.rcv_nxt()?));
    emit_fin(EventKind::FinIn, sock, track, seq)
}

/// A segment on a socket sockbuf does not track yet: only a FIN may start tracking it.
#[inline(always)]
pub fn untracked_fin(sk: u64, skb: u64) -> Result<(), Fault> {
    if kernel::skb_fin_seq::<Probe>(skb)?.is_none() {
        return Ok(());
    }
    let sock = Sock::new(sk);
    let Some(track) = tracked(&sock, Context::Packet)? else {
        return Ok(());
    };
    fin_in(&sock, unsafe { &*track }, skb)
}

/// `net_dev_queue(skb)`: a packet goes to a device. For a tracked TCP socket, says when its
/// FIN leaves; for a UDP socket, each datagram (the moment a corked one is pushed). `A`:
/// how the hook reads `skb` (the socket is read by probe reads either way).
#[inline(always)]
pub fn xmit<A: Access>(skb: u64) -> Result<(), Fault> {
    let sk = kernel::skb_sock::<A>(skb)?;
    if sk == 0 {
        return Ok(());
    }
    let th = kernel::skb_transport::<A>(skb)?;
    // Most packets are TCP data: without a FIN there is nothing to say, known before the
    // socket's entry is looked up. (`sk` may be a request or time-wait socket, smaller than
    // a `struct sock`: a protocol misread there takes the lookup, which finds nothing.)
    let tcp = kernel::skb_sock_protocol::<A>(sk)? == IPPROTO_TCP;
    if tcp && !kernel::tcph_fin(th)? {
        return Ok(());
    }
    let Some(track) = SOCKS.get_ptr_mut(sk) else {
        return crate::udp::untracked_out::<A>(sk, skb);
    };
    match unsafe { (*track).proto } as u16 {
        IPPROTO_UDP => crate::udp::out(&Sock::new(sk), track, th),
        IPPROTO_TCP if tcp || kernel::tcph_fin(th)? => {
            let sock = Sock::new(sk);
            // The FIN takes the sequence number after the last data byte (write_seq - 1
            // once tcp_send_fin has queued it): in send events' numbering, the seq_end of
            // the last write.
            let q = sock.send_queue()?;
            let seq = q.acked + u64::from(q.send_q.wrapping_sub(1));
            emit_fin(EventKind::FinOut, &sock, unsafe { &*track }, seq)
        }
        _ => Ok(()),
    }
}
