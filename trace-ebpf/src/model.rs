//! The event model: what a send call, a sleep for buffer space and an ACK mean, independent of
//! which hook reported them. Attach backends call these and nothing else.
//!
//! A send call is seen as: `send_begin` at each pass of the TCP copy loop (the first pass
//! opens the call), `task_sleeps` when the thread blocks inside the call, and `send_end` when
//! the socket layer returns. `ack` runs for each segment a traced socket receives.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, generated},
    programs::tracing::StackIdContext,
};
use aya_log_ebpf::warn;
use trace_common::{
    AckEvent, BlockEvent, COMM_LEN, EventKind, Header, SEND_F_BLOCKED, SEND_F_REQUESTED,
    SEND_F_TCP_BYTES, SEND_F_UNSEEN, SYNTHETIC_IDS, SendEvent, SendQueue, StackIds,
    calls::{CallRef, pieced},
};

use crate::{
    agg, calls, count, filter, inflight,
    kernel::{self, Access, Fault, IPPROTO_TCP, IPPROTO_UDP, Sock},
    life,
    maps::{EVENTS, Inflight, LOST_EVENTS, NEXT_ID, READ_ERRORS, SOCKS, SockTrack},
    sk_counts, stacks, syscall, udp,
};

/// Runs a model function and turns a fault into a rate-limited aya-log warning
/// (at the 1st, 2nd, 4th, 8th… fault on a CPU), never one log line per event.
#[inline(always)]
pub fn run<C: EbpfContext>(ctx: &C, f: impl FnOnce() -> Result<(), Fault>) -> u32 {
    if let Err(fault) = f() {
        let Some(n) = count::lost(READ_ERRORS) else {
            return 0;
        };
        if n & (n - 1) == 0 {
            match fault {
                Fault::Read(off) => {
                    warn!(ctx, "kernel read failed at offset {} ({} so far)", off, n)
                }
                Fault::InflightFull => {
                    warn!(ctx, "INFLIGHT map full: send calls untraced ({} so far)", n)
                }
                Fault::SocksFull => warn!(ctx, "SOCKS map refused an entry ({} so far)", n),
            }
        }
    }
    0
}

/// An event's header for the socket `sock_id` whose inode is now known as `ino`.
#[inline(always)]
pub fn header(kind: EventKind, pid_tgid: u64, sock_id: u64, ino: u64, now: u64) -> Header {
    Header {
        kind: kind as u32,
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: now,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        sock_id,
        ino,
    }
}

/// The current task's name. Not aya's `bpf_get_current_comm()`, which zeroes its buffer
/// first: a 16-byte array has no alignment to zero it by words, so that is a call to a byte
/// loop (2 % of a traced writer's CPU); the kernel pads the name with zeros itself, and
/// zeroes the buffer when it fails.
#[inline(always)]
pub fn comm() -> [u8; COMM_LEN] {
    let mut c = core::mem::MaybeUninit::<[u8; COMM_LEN]>::uninit();
    unsafe {
        generated::bpf_get_current_comm(c.as_mut_ptr().cast(), COMM_LEN as u32);
        c.assume_init()
    }
}

/// Bytes waiting in the ring buffer before the reader is woken; set by the loader. Below it
/// the reader is not woken per event (it drains on its own short timer), which saves a
/// wake-up and a context switch per event at high rates.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Reserves a `T` in the ring buffer and lets `fill` write it in place (no copy of the event
/// on the 512-byte BPF stack), or counts it as lost when the buffer is full.
#[inline(always)]
pub fn emit<T: 'static>(fill: impl FnOnce(&mut T)) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            // SAFETY: every T here is plain integers; `fill` writes each field.
            fill(unsafe { &mut *entry.as_mut_ptr() });
            let threshold = unsafe { core::ptr::read_volatile(&raw const WAKEUP_BYTES) };
            let flags = if threshold == 0 {
                0 // the kernel's default: wake when the reader had caught up
            } else if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(flags);
        }
        None => {
            count::lost(LOST_EVENTS);
        }
    }
}

/// A pass through the TCP copy loop of a send call on `sock`, with the call's `msghdr`.
#[inline(always)]
pub fn send_begin<A: Access>(sock: Sock<A>, msg: u64) -> Result<(), Fault> {
    let sk = sock.ptr;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if let Some(call) = inflight::get(tid) {
        let call = unsafe { &mut *call };
        if call.sk == sk {
            // A later pass: the thread is back from waiting for space.
            close_block(call, pid_tgid, unsafe { bpf_ktime_get_ns() });
            return Ok(());
        }
    }
    if !filter::task_passes(pid_tgid) {
        return Ok(());
    }
    if !filter::sock_passes(&sock)? {
        return Ok(());
    }
    let found = SOCKS.get_ptr_mut(sk);
    let (requested, msg_flags) = A::msg_left_flags(msg)?;
    let call = Inflight {
        sk,
        msg,
        seq0: 0,
        tid: 0,
        id: 0,
        ino: 0,
        start_ns: unsafe { bpf_ktime_get_ns() },
        requested,
        msg_flags,
        flags: SEND_F_REQUESTED,
        block_start: 0,
        block_left: 0,
        block_queue: SendQueue::default(),
        block_stacks: StackIds::NONE,
    };
    open_call(&sock, tid, call, found)
}

/// Opens thread `tid`'s traced send `call` on `sock` (whichever hook saw it begin), whose
/// entry in SOCKS the caller looked up (`found`).
#[inline(always)]
pub fn open_call<A: Access>(
    sock: &Sock<A>,
    tid: u32,
    mut call: Inflight,
    found: Option<*mut SockTrack>,
) -> Result<(), Fault> {
    // The inode check in track_at catches a struct sock reused by a new socket.
    let track = unsafe { &mut *track_at(sock, sock.ino()?, IPPROTO_TCP, found)? };
    (call.id, call.ino) = (track.id, track.ino);
    inflight::insert(tid, call)?;
    // While the call copies, every ACK counts (on loopback it can come back before the
    // return).
    track.write_end = u64::MAX;
    if agg::timed() {
        // Made now, so an ACK during the call is seen; if there is no room, the return
        // counts the write as untimed.
        let _ = agg::pending(track.id);
    }
    Ok(())
}

/// The thread starts waiting for send-buffer space inside its traced send call (the backend
/// decides what that looks like: a sleep in `sched_switch`, or entering `sk_stream_wait_memory`).
#[inline(always)]
pub fn block_begin<C: StackIdContext>(ctx: &C) -> Result<(), Fault> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = inflight::get(pid_tgid as u32) else {
        return Ok(());
    };
    let call = unsafe { &mut *call };
    if call.block_start != 0 {
        return Ok(());
    }
    let sock = Sock::new(call.sk);
    let now = unsafe { bpf_ktime_get_ns() };
    call.block_queue = sock.send_queue()?;
    call.block_left = if call.msg != 0 {
        kernel::msg_left(call.msg)?
    } else {
        let copied = sock.write_seq()?.wrapping_sub(call.seq0);
        call.requested.saturating_sub(u64::from(copied))
    };
    call.block_start = now;
    call.flags |= SEND_F_BLOCKED;
    call.block_stacks = stacks::take(ctx, trace_common::stacks::WAITS);
    // Said now, not only at the wake-up: a writer stuck on a peer that never reads would
    // otherwise never show up.
    emit_block(EventKind::BlockStart, call, pid_tgid, comm(), 0);
    Ok(())
}

/// A block event of `call`: its start (`end_ns` 0) or its end.
#[inline(always)]
fn emit_block(kind: EventKind, call: &Inflight, pid_tgid: u64, comm: [u8; COMM_LEN], end_ns: u64) {
    emit(|e: &mut BlockEvent| {
        e.hdr = header(
            kind,
            pid_tgid,
            call.id,
            call.ino,
            if end_ns == 0 {
                call.block_start
            } else {
                end_ns
            },
        );
        e.comm = comm;
        e.start_ns = call.block_start;
        e.end_ns = end_ns;
        e.left = call.block_left;
        e.queue = call.block_queue;
        e.stacks = call.block_stacks;
    });
}

/// `sk_stream_wait_memory(sk, timeo_p)` is entered: a blocking sender starts waiting for
/// space; a non-blocking one (`*timeo_p == 0`) gets EAGAIN instead and does not wait.
#[inline(always)]
pub fn wait_for_memory<C: StackIdContext>(ctx: &C, timeo_p: u64) -> Result<(), Fault> {
    if kernel::read::<i64>(timeo_p, 0)? == 0 {
        return Ok(());
    }
    block_begin(ctx)
}

/// The thread stops waiting for space (function backends: `sk_stream_wait_memory` returns).
#[inline(always)]
pub fn block_end() -> Result<(), Fault> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(call) = inflight::get(pid_tgid as u32) {
        close_block(unsafe { &mut *call }, pid_tgid, unsafe {
            bpf_ktime_get_ns()
        });
    }
    Ok(())
}

/// The send call of the current thread returns `ret` (function backends' return probes, which
/// do not see the socket: it is the one the call began on).
#[inline(always)]
pub fn send_return<C: StackIdContext>(ctx: &C, ret: i64) -> Result<(), Fault> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(call) = inflight::get(tid).map(|c| unsafe { &*c }) else {
        return Ok(());
    };
    let sk = call.sk;
    if agg::counts_only() {
        // send_end may count the call without looking for it.
        inflight::remove(tid);
    }
    send_end(ctx, Sock::new(sk), None, ret)
}

/// Emits the block event of a call whose thread runs again (the current one).
#[inline(always)]
fn close_block(call: &mut Inflight, pid_tgid: u64, now: u64) {
    if call.block_start != 0 {
        let comm = call_comm(pid_tgid);
        close_block_of(call, pid_tgid, comm, now);
    }
}

/// The name of the current thread `pid_tgid`, in a traced call: kept beside its call's slot
/// since it read it there, unless renamed since. The helper copies the name byte by byte, a
/// tenth of a streamed send's time.
#[inline(always)]
fn call_comm(pid_tgid: u64) -> [u8; COMM_LEN] {
    let Some(cached) = inflight::held_comm(pid_tgid as u32) else {
        return comm();
    };
    let cached = unsafe { &mut *cached };
    let key = filter::thread_key(pid_tgid);
    if cached.key == key {
        // SAFETY: 16 bytes either way.
        return unsafe { core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(cached.comm) };
    }
    let name = comm();
    cached.comm = unsafe { core::mem::transmute::<[u8; COMM_LEN], [u64; 2]>(name) };
    cached.key = key;
    name
}

/// Emits the block event of a call whose thread `pid_tgid` runs again.
#[inline(always)]
pub fn close_block_of(call: &mut Inflight, pid_tgid: u64, comm: [u8; COMM_LEN], now: u64) {
    if call.block_start == 0 {
        return;
    }
    emit_block(EventKind::Block, call, pid_tgid, comm, now);
    call.block_start = 0;
}

/// The socket layer returns `ret` from a send call on `sock`; `typed`: the socket as a
/// typed pointer where the hook has one (it may keep its counts, see `sk_counts`).
#[inline(always)]
pub fn send_end<C: StackIdContext, A: Access>(
    ctx: &C,
    sock: Sock<A>,
    typed: Option<u64>,
    ret: i64,
) -> Result<(), Fault> {
    match send_counted::<A>(sock.ptr, typed, ret, || Ok(true))? {
        Counted::Done => Ok(()),
        Counted::Left(piece) => send_traced(ctx, sock, ret, piece),
    }
}

/// What [`send_counted`] did with a call.
pub enum Counted {
    /// Counted, or filtered out: nothing is left to do.
    Done,
    /// Left to [`send_traced`], with the piece of its application call when that was taken
    /// already (a pieced call's count was advanced).
    Left(Option<(CallRef, bool)>),
}

/// `--summary` without `--full`: a send call on `sk` that returned `ret`, counted before
/// anything else is looked up (the socket's typed pointer; the call opened: that hook is not
/// attached, or its return took the call off), and no clock read unless the call is pieced.
/// First the thread's filters, then the socket's own counts (`typed`: `sk` as a typed
/// pointer where the hook has one, see `sk_counts`), then its tracking entry. `A`: how the
/// task's registers are read; `ours`: whether the hook takes this socket's calls at all
/// (asked only where its counts are not in the socket).
#[inline(always)]
pub fn send_counted<A: Access>(
    sk: u64,
    typed: Option<u64>,
    ret: i64,
    ours: impl FnOnce() -> Result<bool, Fault>,
) -> Result<Counted, Fault> {
    let pid_tgid = match agg::counting(ret) {
        agg::Counting::Thread(pid_tgid) => pid_tgid,
        agg::Counting::Out => return Ok(Counted::Done),
        agg::Counting::No => {
            return Ok(if ours()? {
                Counted::Left(None)
            } else {
                Counted::Done
            });
        }
    };
    // The counts the socket keeps, else its tracking entry, then one path for both: with a
    // copy of the count for each, fexit's chain of BPF functions came to 544 bytes of stack
    // on 6.1, whose verifier refuses more than 512.
    let kept = sk_counts::kept(typed);
    let track = match kept {
        Some(_) => None,
        None if !ours()? => return Ok(Counted::Done),
        None => match agg::counted_sock(sk) {
            Some(track) => Some(track),
            None => return Ok(Counted::Left(None)),
        },
    };
    let (id, ino) = match (&kept, track) {
        (Some(v), _) => (v.id, v.agg.ino),
        (None, Some(t)) => (t.id, t.ino),
        (None, None) => return Ok(Counted::Done),
    };
    let p = calls::counted_piece::<A>(pid_tgid, id, ino, ret)?;
    let into = match (kept, track) {
        (Some(v), _) => Some(&mut v.agg),
        (None, Some(t)) => sk_counts::make(typed, t, pid_tgid),
        (None, None) => None,
    };
    if let Some(a) = into {
        agg::count_send_in(a, 0, ret, p);
        return Ok(Counted::Done);
    }
    let Some(track) = track else {
        return Ok(Counted::Done);
    };
    if agg::count_send(track, pid_tgid, 0, ret, p).is_some() {
        return Ok(Counted::Done);
    }
    // No room for the socket: streamed. Only a pieced call's piece must not be taken twice;
    // another's is taken again, with its syscall's number.
    Ok(Counted::Left(pieced(p.0.syscall).then_some(p)))
}

/// [`send_end`] of a call [`send_counted`] left (`piece`: as it gave it).
#[inline(always)]
pub fn send_traced<C: StackIdContext, A: Access>(
    ctx: &C,
    sock: Sock<A>,
    ret: i64,
    piece: Option<(CallRef, bool)>,
) -> Result<(), Fault> {
    let sk = sock.ptr;
    let pid_tgid = bpf_get_current_pid_tgid();
    let now = unsafe { bpf_ktime_get_ns() };
    let tid = pid_tgid as u32;
    let (start_ns, requested, msg_flags, flags, ino, seq0, name) = match inflight::get(tid) {
        Some(call) if unsafe { (*call).sk } == sk => {
            let call = unsafe { &mut *call };
            close_block(call, pid_tgid, now);
            let r = (
                call.start_ns,
                call.requested,
                call.msg_flags,
                call.flags,
                call.ino,
                call.seq0,
                call_comm(pid_tgid),
            );
            inflight::remove(tid);
            r
        }
        // The call failed before the copy loop (or is not TCP): filter it here.
        other => {
            // A thread is in one sendmsg at a time: an entry for another socket was left by
            // a path without a matching return (kTLS, KCM); drop it so it cannot leak.
            if other.is_some() {
                inflight::remove(tid);
            }
            if !filter::task_passes(pid_tgid) {
                return Ok(());
            }
            match sock.protocol()? {
                IPPROTO_TCP => {}
                IPPROTO_UDP => {
                    return udp::send_end(&sock, pid_tgid, ret, syscall::send_flags()?);
                }
                _ => return Ok(()),
            }
            if !filter::sock_passes(&sock)? {
                return Ok(());
            }
            // No hook saw it begin (an error before the copy loop, or TCP Fast Open, whose
            // data goes into the SYN instead): its flags as the syscall passed them.
            (0, 0, syscall::send_flags()?, 0, sock.ino()?, 0, comm())
        }
    };
    let track = unsafe { &mut *sock_track(&sock, ino, IPPROTO_TCP)? };
    let (call, unseen) = match piece {
        Some((mut c, unseen)) => {
            if c.call_ns == 0 {
                c.call_ns = now; // left unread by the counting path
            }
            (c, unseen)
        }
        None => calls::piece::<A>(track.id, track.ino, start_ns, now, ret)?,
    };
    // A call the summary cannot count (no room for its socket) streams as an event.
    if agg::takes(ret)
        && agg::send(
            &sock,
            track,
            pid_tgid,
            start_ns,
            requested,
            ret,
            (call, unseen),
        )?
    {
        return Ok(());
    }
    let queue = sock.send_queue()?;
    let seq_end = queue.acked + u64::from(queue.send_q);
    // Known from the entry's write_seq, unless the socket was not connected then (TCP Fast
    // Open: the initial sequence number was chosen during the call; until then write_seq is
    // 0, which a chosen one is once in 2^32).
    let (tcp_bytes, flags) = if flags & SEND_F_TCP_BYTES != 0 && seq0 != 0 {
        (u64::from(sock.write_seq()?.wrapping_sub(seq0)), flags)
    } else {
        (0, flags & !SEND_F_TCP_BYTES)
    };
    if ret > 0 || start_ns != 0 {
        track.write_end = seq_end;
    }
    if track.addrs.rport == 0 {
        // Met before it was connected: a TCP Fast Open call connects it on the way.
        sock.read_addrs(&mut track.addrs)?;
    }
    let (addrs, id, ino) = (track.addrs, track.id, track.ino);
    const EAGAIN: i64 = 11;
    let level = if ret == -EAGAIN {
        trace_common::stacks::WAITS
    } else {
        trace_common::stacks::ALL
    };
    let stacks = stacks::take(ctx, level);
    emit(|e: &mut SendEvent| {
        e.hdr = header(EventKind::Send, pid_tgid, id, ino, now);
        e.comm = name;
        e.addrs = addrs;
        e.start_ns = start_ns;
        e.requested = requested;
        e.ret = ret;
        e.msg_flags = msg_flags;
        e.flags = if unseen { flags | SEND_F_UNSEEN } else { flags };
        e.queue = queue;
        e.seq_end = seq_end;
        e.call = call;
        e.tcp_bytes = tcp_bytes;
        e.stacks = stacks;
    });
    Ok(())
}

/// The tracking entry of `sock`, whose inode now reads `ino`, if sockbuf knows this socket:
/// the entry is its when the inode is the same, or 0 (the socket lost its file on
/// `close()`), or when the entry was made before the socket had one (an accepted connection
/// met before `accept()`) and the ports still match; then the inode is noted.
#[inline(always)]
pub fn known_track<A: Access>(sock: &Sock<A>, ino: u64) -> Result<Option<*mut SockTrack>, Fault> {
    known_at(sock, ino, SOCKS.get_ptr_mut(sock.ptr))
}

/// [`known_track`] where the caller looked the socket up in SOCKS already (`found`).
#[inline(always)]
fn known_at<A: Access>(
    sock: &Sock<A>,
    ino: u64,
    found: Option<*mut SockTrack>,
) -> Result<Option<*mut SockTrack>, Fault> {
    let Some(t) = found else {
        return Ok(None);
    };
    let track = unsafe { &mut *t };
    if ino == 0 || track.ino == ino {
        return Ok(Some(t));
    }
    if track.ino == 0 && track.addrs.lport == sock.lport()? && track.addrs.rport == sock.rport()? {
        track.ino = ino;
        return Ok(Some(t));
    }
    Ok(None) // its struct sock now belongs to another socket
}

/// A new socket id where the socket has no inode yet: see `trace_common::SYNTHETIC_IDS`.
/// Two programs that both make one on a CPU, one of them between the other's add and its
/// read (an instruction apart), would get the same id: the default BPF CPU has no atomic
/// fetch-and-add.
#[inline(always)]
fn synthetic_id() -> u64 {
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() } & 0xff);
    let n = count::lost(NEXT_ID).unwrap_or(0);
    SYNTHETIC_IDS | (cpu << 32) | (n & 0xffff_ffff)
}

/// The socket's tracking entry, its addresses read once and cached: created when the socket
/// is new to sockbuf, or when its `struct sock` now belongs to another socket.
#[inline(always)]
pub fn sock_track<A: Access>(
    sock: &Sock<A>,
    ino: u64,
    proto: u16,
) -> Result<*mut SockTrack, Fault> {
    track_at(sock, ino, proto, SOCKS.get_ptr_mut(sock.ptr))
}

/// [`sock_track`] where the caller looked the socket up in SOCKS already (`found`).
#[inline(always)]
fn track_at<A: Access>(
    sock: &Sock<A>,
    ino: u64,
    proto: u16,
    found: Option<*mut SockTrack>,
) -> Result<*mut SockTrack, Fault> {
    if let Some(t) = known_at(sock, ino, found)? {
        return Ok(t);
    }
    let track = SockTrack {
        id: if ino != 0 { ino } else { synthetic_id() },
        ino,
        write_end: 0,
        addrs: sock.addrs()?,
        proto: u32::from(proto),
        _pad: 0,
    };
    SOCKS
        .insert(sock.ptr, track, 0)
        .map_err(|_| Fault::SocksFull)?;
    SOCKS.get_ptr_mut(sock.ptr).ok_or(Fault::SocksFull)
}

/// A UDP socket's tracking entry, with its addresses as they are now: a `connect()` after
/// sockbuf met the socket changes them.
#[inline(always)]
pub fn udp_track<A: Access>(sock: &Sock<A>) -> Result<*mut SockTrack, Fault> {
    let track = sock_track(sock, sock.ino()?, IPPROTO_UDP)?;
    sock.read_addrs(unsafe { &mut (*track).addrs })?;
    Ok(track)
}

/// An incoming segment `skb` on an established socket `sock`, before TCP processes it.
#[inline(always)]
pub fn ack<A: Access>(sock: Sock<A>, skb: u64) -> Result<(), Fault> {
    let sk = sock.ptr;
    let Some(found) = SOCKS.get_ptr_mut(sk) else {
        return life::untracked_fin(sk, skb);
    };
    let track = unsafe { &mut *found };
    life::fin_in(&sock, track, skb)?;
    if agg::on() {
        return agg::ack(&sock, track, skb);
    }
    let bytes_acked = sock.bytes_acked()?;
    if track.write_end <= bytes_acked || track.write_end == 0 {
        return Ok(()); // nothing traced is waiting for an ACK
    }
    let Some(ack_seq) = kernel::skb_ack_seq::<A>(skb)? else {
        return Ok(());
    };
    let snd_una = sock.snd_una()?;
    let advance = ack_seq.wrapping_sub(snd_una);
    // Same acceptance test as tcp_ack(): moves forward, and not past what was sent.
    if advance == 0 || advance > sock.snd_nxt()?.wrapping_sub(snd_una) {
        return Ok(());
    }
    if known_at(&sock, sock.ino()?, Some(found))?.is_none() {
        let _ = SOCKS.remove(sk); // the struct sock was reused by another socket
        return Ok(());
    }
    let (id, ino) = (track.id, track.ino);
    let acked = bytes_acked + u64::from(advance);
    emit(|e: &mut AckEvent| {
        e.hdr = header(EventKind::Ack, 0, id, ino, unsafe { bpf_ktime_get_ns() });
        e.prev_acked = bytes_acked;
        e.acked = acked;
    });
    Ok(())
}
