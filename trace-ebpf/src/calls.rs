//! Ties the kernel's send and receive calls to the application's system call (see
//! `trace_common::calls`): a `sendfile()`, `splice()`, `sendmmsg()` or `recvmmsg()` is
//! remembered per thread from its first kernel call to the syscall's exit, which reports what
//! the application got.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::Array,
};
use trace_common::{
    EventKind, INFLIGHT_ENTRIES,
    calls::{self, CALL_F_EXIT_MISSED, CallEvent, CallRef, NO_SYSCALL},
};

use crate::{
    agg, count,
    kernel::{Access, Fault, read},
    maps::{EXITS_MISSED, PIECED, Pieced},
    model::{comm, emit, header},
    syscall,
};

/// Non-zero once a kernel send was met inside a `sendfile()`, `splice()` or `sendmmsg()`:
/// until then the exit hook, which runs at every syscall's exit on the machine, returns at
/// once; after, it looks the thread up. A flag, not a count of open calls: it would have to
/// be counted down at every exit.
static mut PIECED_SEEN: u64 = 0;

/// Set by the loader where the pieced syscalls' own classic tracepoints are hooked, entry and
/// exit (no standby copies: a task is never preempted inside a program, so the kernel skips
/// neither): the thread's slot of [`PIECED_NOW`] then says whether it is in one.
#[unsafe(no_mangle)]
static PIECED_AT_ENTRY: u32 = 0;

/// The pieced syscall each thread is in (`tid << 32 | nr`), by thread id modulo the size;
/// 0 in none. Read where [`PIECED_AT_ENTRY`]: an array slot is a few loads, where reading
/// the number from the task's registers takes two helper calls (a fifth of a counted call).
#[map]
static PIECED_NOW: Array<u64> = Array::with_max_entries(INFLIGHT_ENTRIES, 0);

#[inline(always)]
fn at_entry() -> bool {
    unsafe { core::ptr::read_volatile(&raw const PIECED_AT_ENTRY) != 0 }
}

/// A `sendfile()`, `splice()`, `sendmmsg()` or `recvmmsg()` (`nr`) of the current thread
/// begins.
#[inline(always)]
pub fn enter(nr: u32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(slot) = PIECED_NOW.get_ptr_mut(tid & (INFLIGHT_ENTRIES - 1)) {
        unsafe { *slot = (u64::from(tid) << 32) | u64::from(nr) };
    }
}

/// The current thread `tid` leaves the pieced syscall it entered (its slot may be another
/// thread's since: that one's stays).
#[inline(always)]
fn leave(tid: u32) {
    if let Some(slot) = PIECED_NOW.get_ptr_mut(tid & (INFLIGHT_ENTRIES - 1))
        && unsafe { *slot } >> 32 == u64::from(tid)
    {
        unsafe { *slot = 0 };
    }
}

/// The syscall the current thread `pid_tgid` is in, where only whether it is a pieced one
/// matters (`--summary`'s counting): from its slot where the entries are hooked
/// ([`NO_SYSCALL`] for every other), else from its registers.
#[inline(always)]
fn pieced_nr<A: Access>(pid_tgid: u64) -> Result<u32, Fault> {
    if !at_entry() {
        return Ok(A::syscall_nr()?.unwrap_or(NO_SYSCALL));
    }
    let tid = pid_tgid as u32;
    let now = PIECED_NOW
        .get(tid & (INFLIGHT_ENTRIES - 1))
        .copied()
        .unwrap_or(0);
    Ok(if now >> 32 == u64::from(tid) && now != 0 {
        now as u32
    } else {
        NO_SYSCALL
    })
}

/// The application call a kernel send of the current thread belongs to: the send started at
/// `start_ns` (0: unseen, the return `now` stands in; both 0: the clock is read only when
/// the call is pieced, else `call_ns` stays 0 for the caller to fill), returned `ret`, on
/// socket `id`/`ino`.
/// `true` with it: `ret` is an error the application will not see (earlier pieces of its
/// call copied bytes, and the call returns those).
#[inline(always)]
pub fn piece<A: Access>(
    id: u64,
    ino: u64,
    start_ns: u64,
    now: u64,
    ret: i64,
) -> Result<(CallRef, bool), Fault> {
    let call_ns = if start_ns != 0 { start_ns } else { now };
    piece_of(
        A::syscall_nr()?.unwrap_or(NO_SYSCALL),
        id,
        ino,
        call_ns,
        ret,
    )
}

/// [`piece`] for a call `--summary` counts from its return alone (thread `pid_tgid`): the
/// syscall's number is [`NO_SYSCALL`] unless it is a pieced one, and `call_ns` is 0 then.
#[inline(always)]
pub fn counted_piece<A: Access>(
    pid_tgid: u64,
    id: u64,
    ino: u64,
    ret: i64,
) -> Result<(CallRef, bool), Fault> {
    piece_of(pieced_nr::<A>(pid_tgid)?, id, ino, 0, ret)
}

/// [`piece`] of syscall `nr`, the call's start at `call_ns` if known.
#[inline(always)]
fn piece_of(
    nr: u32,
    id: u64,
    ino: u64,
    mut call_ns: u64,
    ret: i64,
) -> Result<(CallRef, bool), Fault> {
    if !calls::pieced(nr) {
        return Ok((
            CallRef {
                call_ns,
                syscall: nr,
                piece: 0,
            },
            false,
        ));
    }
    if call_ns == 0 {
        call_ns = unsafe { bpf_ktime_get_ns() }; // `now` was left to us (see `send_end`)
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let copied = ret.max(0) as u64;
    let errors = u32::from(ret < 0);
    if let Some(p) = PIECED.get_ptr_mut(tid) {
        let p = unsafe { &mut *p };
        if p.nr == nr {
            let unseen = ret < 0 && p.copied > 0;
            let piece = p.pieces;
            p.pieces += 1;
            p.copied += copied;
            p.errors += errors;
            (p.id, p.ino) = (id, ino);
            return Ok((
                CallRef {
                    call_ns: p.call_ns,
                    syscall: nr,
                    piece,
                },
                unseen,
            ));
        }
    }
    let p = Pieced {
        nr,
        pieces: 1,
        errors,
        _pad: 0,
        call_ns,
        copied,
        id,
        ino,
    };
    // No room (a thread per entry: unlikely): the call's pieces stay untied.
    let _ = PIECED.insert(tid, p, 0);
    unsafe { core::ptr::write_volatile(&raw mut PIECED_SEEN, 1) };
    Ok((
        CallRef {
            call_ns,
            syscall: nr,
            piece: 0,
        },
        false,
    ))
}

/// Whether the exit hook has anything to look at.
#[inline(always)]
pub fn any() -> bool {
    unsafe { core::ptr::read_volatile(&raw const PIECED_SEEN) != 0 }
}

/// The raw `sys_exit(regs, ret)`: [`exit`], the syscall's number read from the registers.
#[inline(always)]
pub fn raw_exit(regs: u64, ret: i64) -> Result<(), Fault> {
    exit(|| Ok(read::<u64>(regs, syscall::ORIG_AX)? as u32), ret)
}

/// The classic exit of pieced syscall `nr`, returning `ret`: the thread leaves it, and the
/// call it made (if a kernel call of it was met) ends.
#[inline(always)]
pub fn pieced_exit(nr: u32, ret: i64) -> Result<(), Fault> {
    leave(bpf_get_current_pid_tgid() as u32);
    if !any() {
        return Ok(());
    }
    exit(|| Ok(nr), ret)
}

/// A syscall returns `ret` to the application: a remembered call of this thread ends. A
/// thread is in one syscall at a time, so an entry met at another syscall's exit (`nr`,
/// read only when there is an entry) is a call whose own exit the kernel skipped (a program
/// busy on that CPU); it ends without a result, counted.
#[inline(always)]
pub fn exit(nr: impl FnOnce() -> Result<u32, Fault>, ret: i64) -> Result<(), Fault> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(p) = (unsafe { PIECED.get(tid) }).copied() else {
        return Ok(());
    };
    let _ = PIECED.remove(tid);
    let missed = nr()? != p.nr;
    if missed {
        count::lost(EXITS_MISSED);
    }
    if agg::on() {
        return Ok(()); // the summary counted the call at its first piece
    }
    emit(|e: &mut CallEvent| {
        e.hdr = header(EventKind::Call, pid_tgid, p.id, p.ino, unsafe {
            bpf_ktime_get_ns()
        });
        e.comm = comm();
        e.call = CallRef {
            call_ns: p.call_ns,
            syscall: p.nr,
            piece: p.pieces,
        };
        e.ret = if missed { 0 } else { ret };
        e.copied = p.copied;
        e.errors = p.errors;
        e.flags = if missed { CALL_F_EXIT_MISSED } else { 0 };
    });
    Ok(())
}
