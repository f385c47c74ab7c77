//! `--summary`: the per-call events counted in the kernel, per CPU and per socket, instead of
//! one ring-buffer record each (see `trace_common::agg`). Each write's time to its ACK is
//! measured here too: the send path queues the write's end in [`PENDING`], the ACK path
//! takes off every write the ACK covers.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_loop},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};
use trace_common::{
    SockAddrs,
    agg::{AGG_ENTRIES, Level, PENDING_ENTRIES, PENDING_SLOTS, Pending, SockAgg, bucket, covers},
    calls::{self, CallRef},
};

use crate::{
    count::{self, add},
    filter,
    kernel::{self, Access, Fault, IPPROTO_TCP, Sock},
    maps::{AGG_STREAMED, SOCKS, SockTrack},
    model::comm,
};

/// A [`Level`]; set by the loader.
#[unsafe(no_mangle)]
static AGGREGATE: u32 = 0;

/// PENDING's entries are created as sockets appear (not preallocated: 48 KiB each).
const BPF_F_NO_PREALLOC: u32 = 1;
/// A map update that creates the entry only if it does not exist yet.
const BPF_NOEXIST: u64 = 1;

/// Preallocated (`--max-sockets` entries): an entry made from a BPF program never waits on
/// the kernel's allocator (which can come up empty in a burst of new sockets), and the
/// delete when a socket closes only returns it to a free list (freeing a per-CPU element
/// back to the allocator cost more than the rest of the summary's work per connection).
#[map]
pub static AGG: PerCpuHashMap<u64, SockAgg> = PerCpuHashMap::with_max_entries(AGG_ENTRIES, 0);

#[map]
pub static PENDING: HashMap<u64, Pending> =
    HashMap::with_max_entries(PENDING_ENTRIES, BPF_F_NO_PREALLOC);

/// New entries start as copies of these (both too large for the 512-byte stack). `BLANK`'s
/// counts stay zero, only its identity fields are written, just before the copy; the queue
/// is never written, so one shared copy does (per-CPU values are limited to 32 KiB).
#[map]
static BLANK: PerCpuArray<SockAgg> = PerCpuArray::with_max_entries(1, 0);
#[map]
static BLANK_PENDING: Array<Pending> = Array::with_max_entries(1, 0);

#[inline(always)]
fn level() -> u32 {
    unsafe { core::ptr::read_volatile(&raw const AGGREGATE) }
}

/// `--summary`: the per-call events are counted here.
#[inline(always)]
pub fn on() -> bool {
    level() != Level::Off as u32
}

/// `--summary` without `--full`: counts only, from the return hooks (the call's start, the
/// sleeps and the ACKs are not hooked).
#[inline(always)]
pub fn counts_only() -> bool {
    level() == Level::Counts as u32
}

/// `--summary --full`: each write is also timed to its ACK.
#[inline(always)]
pub fn timed() -> bool {
    level() == Level::Full as u32
}

const EAGAIN: i64 = 11;
const SLOT_MASK: u32 = PENDING_SLOTS - 1;

/// Whether the per-call aggregation takes a call that returned `ret`: other errors are rare
/// and stream as events, with their names.
#[inline(always)]
pub fn takes(ret: i64) -> bool {
    on() && (ret >= 0 || ret == -EAGAIN)
}

/// `--summary` without `--full` counts a call that returned `ret` (bytes, or -EAGAIN).
#[inline(always)]
pub fn counted(ret: i64) -> bool {
    counts_only() && (ret >= 0 || ret == -EAGAIN)
}

/// What `--summary` without `--full` does with a call that returned `ret`.
pub enum Counting {
    /// Nothing: the caller traces the call (streaming, `--full`, an error other than EAGAIN).
    No,
    /// Nothing at all: the current thread fails the filters. Told first, before any look-up
    /// of the socket, so that the calls of every other program on the machine cost only this.
    Out,
    /// Counts it, for the current thread `pid_tgid`.
    Thread(u64),
}

/// See [`Counting`]. (In this mode no call's start is hooked, or its return hook took the
/// call off already: returning at once leaves nothing behind.)
#[inline(always)]
pub fn counting(ret: i64) -> Counting {
    if !counted(ret) {
        return Counting::No;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if filter::task_passes(pid_tgid) {
        Counting::Thread(pid_tgid)
    } else {
        Counting::Out
    }
}

/// `--summary` without `--full`: the tracking entry of TCP socket `sk` when sockbuf already
/// knows it, so that a call [`counting`] counts is counted without reading the socket at
/// all. The entry is trusted to still be this socket (with `--full` and when streaming, its
/// inode is read and compared at each call): the lifecycle hook drops it when the
/// connection reaches CLOSE, before its `struct sock` can be reused.
#[inline(always)]
pub fn counted_sock(sk: u64) -> Option<&'static SockTrack> {
    let track = unsafe { SOCKS.get(sk) }?;
    // An entry without an inode yet takes the full path once, which notes it.
    (track.proto == u32::from(IPPROTO_TCP) && track.ino != 0).then_some(track)
}

/// The current CPU's counts of socket `track`, created with the task's identity
/// (`pid_tgid` 0: none, in softirq) and the socket's addresses; `None` when AGG has no room
/// (full, or the kernel could not allocate the entry at that moment): the caller streams
/// the call as an event instead, so that it is still counted, and says so.
#[inline(always)]
fn entry(track: &SockTrack, pid_tgid: u64) -> Option<&'static mut SockAgg> {
    entry_of(track.id, track.ino, &track.addrs, pid_tgid)
}

/// [`entry`] of the socket of id `id`, inode `ino`, addresses `addrs`.
#[inline(always)]
pub fn entry_of(
    id: u64,
    ino: u64,
    addrs: &SockAddrs,
    pid_tgid: u64,
) -> Option<&'static mut SockAgg> {
    if let Some(a) = AGG.get_ptr_mut(id) {
        let a = unsafe { &mut *a };
        a.ino = ino;
        return Some(a);
    }
    let blank = unsafe { &mut *BLANK.get_ptr_mut(0)? };
    blank.pid = (pid_tgid >> 32) as u32;
    blank.ino = ino;
    blank.comm = if pid_tgid == 0 { [0; 16] } else { comm() };
    blank.addrs = *addrs;
    // Inserted from the map by reference: by value it would be copied onto the stack.
    let blank: &SockAgg = blank;
    // Only if still absent: another program on this CPU (a standby copy, while this one was
    // preempted since the lookup above) may have made it and counted into it; replacing it
    // would drop that count (seen once in 210 000 calls of three writers on one CPU, 7.3).
    let _ = AGG.insert(id, blank, BPF_NOEXIST);
    match AGG.get_ptr_mut(id) {
        Some(a) => Some(unsafe { &mut *a }),
        None => {
            count::lost(AGG_STREAMED);
            None
        }
    }
}

/// Counts a write acked `ns` after its call started, in the ACK path's fields (`in_call`:
/// the send path's, which the ACK path, interrupting it, cannot race with).
#[inline(always)]
fn acked(a: &mut SockAgg, ns: u64, in_call: bool) {
    let (n, hist) = if in_call {
        (&mut a.call_acked_writes, &mut a.call_ack_us)
    } else {
        (&mut a.acked_writes, &mut a.ack_us)
    };
    add(n, 1);
    if let Some(c) = hist.get_mut(bucket(ns / 1000)) {
        add(c, 1);
    }
}

/// Socket `id`'s queue of writes waiting for their ACK, created at its first traced write;
/// `None` when PENDING has no room (the write is then counted as untimed).
#[inline(always)]
pub fn pending(id: u64) -> Option<&'static mut Pending> {
    if let Some(p) = PENDING.get_ptr_mut(id) {
        return Some(unsafe { &mut *p });
    }
    // All zeroes: never written.
    let blank: &Pending = unsafe { &*BLANK_PENDING.get_ptr(0)? };
    // Only if still absent, as in `entry`: another thread's writes may be queued in it.
    if PENDING.insert(id, blank, BPF_NOEXIST).is_ok() {
        unsafe { (*PENDING.get_ptr_mut(id)?).id = id };
    }
    PENDING.get_ptr_mut(id).map(|p| unsafe { &mut *p })
}

/// A TCP send call returned `ret` (bytes, or -EAGAIN); it started at `start_ns` (0: unseen).
/// `false`: not counted (no room for the socket), to be streamed instead.
#[inline(always)]
pub fn send<A: Access>(
    sock: &Sock<A>,
    track: &SockTrack,
    pid_tgid: u64,
    start_ns: u64,
    requested: u64,
    ret: i64,
    piece: (CallRef, bool),
) -> Result<bool, Fault> {
    let Some(a) = count_send(track, pid_tgid, requested, ret, piece) else {
        return Ok(false);
    };
    if ret <= 0 || !timed() {
        return Ok(true);
    }
    if start_ns == 0 {
        add(&mut a.untimed_writes, 1);
        return Ok(true);
    }
    let Some(p) = pending(track.id) else {
        add(&mut a.untimed_writes, 1); // no room for another socket's queue
        return Ok(true);
    };
    let end = sock.write_seq()?;
    if end.wrapping_sub(sock.snd_una()?) as i32 <= 0 {
        // Acked before the call returned (loopback answers within the call): by the last ACK
        // (the first to cover it: no later data was sent yet, unless another thread wrote).
        if p.covered(end) && p.last_ack_ns >= start_ns {
            acked(a, p.last_ack_ns - start_ns, true);
        } else {
            add(&mut a.untimed_writes, 1);
        }
        return Ok(true);
    }
    let head = unsafe { core::ptr::read_volatile(&raw const p.head) };
    let tail = unsafe { core::ptr::read_volatile(&raw const p.tail) };
    if head.wrapping_sub(tail) >= PENDING_SLOTS {
        add(&mut a.untimed_writes, 1);
        return Ok(true);
    }
    let i = (head & SLOT_MASK) as usize;
    if let (Some(s), Some(t)) = (p.seq.get_mut(i), p.start_ns.get_mut(i)) {
        (*s, *t) = (end, start_ns);
    }
    // The slot is written before the ACK path can see it (x86 keeps stores in order).
    unsafe { core::ptr::write_volatile(&raw mut p.head, head.wrapping_add(1)) };
    Ok(true)
}

/// [`send`]'s counts, all that `--summary` without `--full` takes (the socket is not read):
/// the socket's entry, for the caller to time the write; `None` when there is no room for it.
#[inline(always)]
pub fn count_send(
    track: &SockTrack,
    pid_tgid: u64,
    requested: u64,
    ret: i64,
    piece: (CallRef, bool),
) -> Option<&'static mut SockAgg> {
    let a = entry(track, pid_tgid)?;
    count_send_in(a, requested, ret, piece);
    Some(a)
}

/// [`count_send`] into counts `a` (the socket's, on this CPU or in the socket).
#[inline(always)]
pub fn count_send_in(a: &mut SockAgg, requested: u64, ret: i64, (call, unseen): (CallRef, bool)) {
    if requested != 0 {
        add(&mut a.requested, requested);
    }
    if call.piece == 0 && calls::pieced(call.syscall) {
        add(&mut a.pieced_calls, 1);
    }
    if ret < 0 {
        // An EAGAIN the application did not get is no EAGAIN of its.
        if unseen {
            add(&mut a.unseen_eagain, 1);
        } else {
            add(&mut a.eagain, 1);
        }
        return;
    }
    add(&mut a.copied, ret as u64);
    if let Some(c) = a.copy_bytes.get_mut(bucket(ret as u64)) {
        add(c, 1);
    }
}

/// A receive call returned `ret` (bytes, or -EAGAIN). `false`: not counted (no room for
/// the socket), to be streamed instead.
#[inline(always)]
pub fn recv(track: &SockTrack, pid_tgid: u64, ret: i64) -> bool {
    let Some(a) = entry(track, pid_tgid) else {
        return false;
    };
    count_recv_in(a, ret);
    true
}

/// [`recv`] into counts `a` (the socket's, on this CPU or in the socket).
#[inline(always)]
pub fn count_recv_in(a: &mut SockAgg, ret: i64) {
    if ret < 0 {
        add(&mut a.recv_eagain, 1);
        return;
    }
    add(&mut a.received, ret as u64);
    if let Some(c) = a.recv_bytes.get_mut(bucket(ret as u64)) {
        add(c, 1);
    }
}

/// A segment arrives on tracked socket `sk`: every waiting write its ACK covers is acked.
#[inline(always)]
pub fn ack<A: Access>(sock: &Sock<A>, track: &SockTrack, skb: u64) -> Result<(), Fault> {
    let Some(p) = PENDING.get_ptr_mut(track.id) else {
        return Ok(()); // no traced write on this socket
    };
    let p = unsafe { &mut *p };
    let Some(ack_seq) = kernel::skb_ack_seq::<A>(skb)? else {
        return Ok(());
    };
    // Same test as tcp_ack(): an ACK of data never sent is ignored.
    if ack_seq.wrapping_sub(sock.snd_nxt()?) as i32 > 0 {
        return Ok(());
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // The ACK before this one: it covers the writes queued after it came.
    let (before_seq, before_ns) = (p.last_ack_seq, p.last_ack_ns);
    if before_ns == 0 || ack_seq.wrapping_sub(before_seq) as i32 > 0 {
        (p.last_ack_seq, p.last_ack_ns) = (ack_seq, now);
    }
    settle(p, track, ack_seq, before_seq, before_ns, now, false);
    Ok(())
}

/// Takes off every waiting write of `p` that an ACK of `ack_seq` at `now` covers (the one
/// before it, of `before_seq` at `before_ns`, may have covered some already); `closing`:
/// settled by the socket's close, not timed. Returns the writes left waiting.
#[inline(always)]
fn settle(
    p: &mut Pending,
    track: &SockTrack,
    ack_seq: u32,
    before_seq: u32,
    before_ns: u64,
    now: u64,
    closing: bool,
) -> u32 {
    let head = unsafe { core::ptr::read_volatile(&raw const p.head) };
    let tail = p.tail;
    if tail == head {
        return 0;
    }
    // No room: the waiting writes stay queued, timed by a later ACK or at the end.
    let Some(a) = entry(track, 0) else {
        return head.wrapping_sub(tail);
    };
    let queue: *mut Pending = p;
    let mut pop = Pop {
        p: queue,
        a,
        ack_seq,
        before_seq,
        before_ns,
        now,
        head,
        tail,
        closing,
    };
    // One ACK can cover every waiting write: a bpf_loop callback is verified once, where an
    // open-coded loop of PENDING_SLOTS passes is verified pass by pass (past the limit).
    unsafe {
        bpf_loop(
            PENDING_SLOTS,
            pop_one as *mut c_void,
            (&raw mut pop).cast(),
            0,
        )
    };
    unsafe { core::ptr::write_volatile(&raw mut (*queue).tail, pop.tail) };
    head.wrapping_sub(pop.tail)
}

/// Socket `id` ended unseen (its CLOSE was missed): its waiting writes are dropped.
#[inline(always)]
pub fn forget(id: u64) {
    if timed() {
        let _ = PENDING.remove(id);
    }
}

/// Socket `track` reaches CLOSE (`--summary --full`): its waiting writes are settled by
/// what its `snd_una` says was acked (ACKs after ESTABLISHED reach no ACK hook), the rest
/// counted as never acked, and its queue freed.
#[inline(always)]
pub fn closed<A: Access>(sock: &Sock<A>, track: &SockTrack) -> Result<(), Fault> {
    if !timed() {
        return Ok(());
    }
    let Some(p) = PENDING.get_ptr_mut(track.id) else {
        return Ok(());
    };
    let p = unsafe { &mut *p };
    let now = unsafe { bpf_ktime_get_ns() };
    let (before_seq, before_ns) = (p.last_ack_seq, p.last_ack_ns);
    let left = settle(p, track, sock.snd_una()?, before_seq, before_ns, now, true);
    if left > 0
        && let Some(a) = entry(track, 0)
    {
        add(&mut a.unacked_writes, u64::from(left));
    }
    let _ = PENDING.remove(track.id);
    Ok(())
}

/// What [`pop_one`] works on: the ACK and the socket's queue and counts.
struct Pop {
    p: *const Pending,
    a: &'static mut SockAgg,
    ack_seq: u32,
    before_seq: u32,
    before_ns: u64,
    now: u64,
    head: u32,
    tail: u32,
    closing: bool,
}

/// Takes the oldest waiting write off if the ACK covers it; 1 (stop) when none is left to take.
extern "C" fn pop_one(_: u32, ctx: *mut c_void) -> i64 {
    let pop = unsafe { &mut *ctx.cast::<Pop>() };
    if pop.tail == pop.head {
        return 1;
    }
    let i = (pop.tail & SLOT_MASK) as usize;
    let q = unsafe { &*pop.p };
    let (Some(&end), Some(&start)) = (q.seq.get(i), q.start_ns.get(i)) else {
        return 1;
    };
    if (pop.ack_seq.wrapping_sub(end) as i32) < 0 {
        return 1;
    }
    // Queued after the ACK before this one came, which already covered it.
    if covers(pop.before_seq, pop.before_ns, end) {
        acked(pop.a, pop.before_ns.saturating_sub(start), false);
    } else if pop.closing {
        add(&mut pop.a.close_acked_writes, 1);
    } else {
        acked(pop.a, pop.now.saturating_sub(start), false);
    }
    pop.tail = pop.tail.wrapping_add(1);
    0
}
