//! Standby copies of programs (see `trace_common::standby`): on kernels that run BPF
//! programs preemptibly, the kernel skips a program for a thread that reaches its hook while
//! another thread is preempted inside it on the same CPU. The copy runs right after the
//! program on the same hook (the loader attaches them in that order) and must tell whether
//! the program ran for this call of the hook. The program writes the address of its context
//! (the hook's arguments on the stack, the same for both programs of one call) into its
//! thread's mark as the first thing it does; the copy finds that address there when the
//! program ran, and clears it. Otherwise the program was skipped, and the copy does the
//! work. Per thread, because the thread may be preempted between the two programs (and even
//! move to another CPU) while others run the program; the context's address as well, because
//! a softirq that hits the same hook on top of the program runs as the same thread, on
//! another stack. (A busy flag cleared at the program's end would miss threads preempted
//! after it, still inside the program for the kernel.)

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id};
use trace_common::standby::THREADS;

use crate::maps::{STANDBY, STANDBY_MARKS};

/// This thread's marks for program `slot`: the call it runs for, and the one that call
/// interrupted. Every CPU's idle task is thread 0 (packets' softirqs run as it), and never
/// moves: those go by CPU.
#[inline(always)]
fn marks(slot: u32) -> Option<(*mut u64, *mut u64)> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let who = if tid == 0 {
        unsafe { bpf_get_smp_processor_id() }
    } else {
        tid
    };
    let i = 2 * (slot * THREADS + who % THREADS);
    Some((
        STANDBY_MARKS.get_ptr_mut(i)?,
        STANDBY_MARKS.get_ptr_mut(i + 1)?,
    ))
}

/// A bit per slot whose copy is attached; set by the loader. Where programs are not
/// preempted most copies are left out, and their programs need not mark their calls.
#[unsafe(no_mangle)]
static MARK_CALLS: u32 = 0;

/// The program itself: marks this call as run (for its copy, if attached), then runs `f`.
/// The mark before is kept: an interrupt between a program and its copy (a softirq's state
/// change on top of a task's) runs both on top of them, as the same thread; its copy must
/// not take the outer program's mark away.
#[inline(always)]
pub fn primary(slot: u32, call: u64, f: impl FnOnce() -> u32) -> u32 {
    if unsafe { core::ptr::read_volatile(&raw const MARK_CALLS) } & (1 << slot) != 0
        && let Some((m, under)) = marks(slot)
    {
        unsafe {
            *under = *m;
            *m = call;
        }
    }
    f()
}

/// The copy: runs `f` unless the program ran for this call.
#[inline(always)]
pub fn standby(slot: u32, call: u64, f: impl FnOnce() -> u32) -> u32 {
    let Some((m, under)) = marks(slot) else {
        return 0;
    };
    unsafe {
        if *m == call {
            *m = *under;
            *under = 0;
            return 0;
        }
        if *under == call {
            // Its mark was pushed down by a program this one interrupted between the two.
            *under = 0;
            return 0;
        }
    }
    if let Some(n) = STANDBY.get_ptr_mut(slot) {
        unsafe { *n += 1 };
    }
    f()
}

/// Defines a program and its standby copy: one body, two programs on the same hook.
/// `with_standby!(#[attach attribute] fn program, sb_program(ctx: Context) { body })`, or
/// with `if guard => { body }`: calls the guard turns away cost neither program more.
macro_rules! with_standby {
    ($(#[$attr:meta])* fn $name:ident, $copy:ident($ctx:ident: $ty:ty) $body:block) => {
        $crate::standby::with_standby! {
            $(#[$attr])* fn $name, $copy($ctx: $ty) if true => $body
        }
    };
    ($(#[$attr:meta])* fn $name:ident, $copy:ident($ctx:ident: $ty:ty) if $guard:expr => $body:block) => {
        $crate::standby::with_standby!(@one primary $name, $name, $(#[$attr])* $ctx, $ty, $guard, $body);
        $crate::standby::with_standby!(@one standby $name, $copy, $(#[$attr])* $ctx, $ty, $guard, $body);
    };
    // One of the two: `role` is `primary` or `standby`, `slot_of` the program's name.
    (@one $role:ident $slot_of:ident, $fn:ident, $(#[$attr:meta])* $ctx:ident, $ty:ty, $guard:expr, $body:block) => {
        $(#[$attr])*
        pub fn $fn($ctx: $ty) -> u32 {
            if !$guard {
                return 0;
            }
            const SLOT: u32 = trace_common::standby::slot(stringify!($slot_of));
            $crate::standby::$role(SLOT, aya_ebpf::EbpfContext::as_ptr(&$ctx) as u64, || $body)
        }
    };
}

pub(crate) use with_standby;
