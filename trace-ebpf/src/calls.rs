//! Ties the kernel's send and receive calls to the application's system call (see
//! `trace_common::calls`): a `sendfile()`, `splice()`, `sendmmsg()` or `recvmmsg()` is
//! remembered per thread from its first kernel call to the syscall's exit, which reports what
//! the application got.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use trace_common::{
    EventKind,
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
    let mut call_ns = if start_ns != 0 { start_ns } else { now };
    let nr = A::syscall_nr()?.unwrap_or(NO_SYSCALL);
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
