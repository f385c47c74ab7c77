//! Standby copies of programs (see `trace_common::standby`): on kernels that run BPF
//! programs preemptibly, the kernel skips a program for a thread that reaches its hook while
//! another thread is preempted inside it on the same CPU. The copy runs right after the
//! program on the same hook (the loader attaches them in that order) and must tell whether
//! the program ran for this call of the hook. The program writes the address of its context
//! (the hook's arguments on this thread's stack, the same for both programs of one call)
//! into a small per-CPU ring of recent calls as the first thing it does; the copy finds that
//! address there when the program ran, and clears it. Otherwise the program was skipped,
//! and the copy does the work. A ring rather than one slot: the thread may be preempted
//! between the two programs, and others may run the program meanwhile. A thread id would not
//! do: a softirq that hits the same hook on top of the program runs as the same thread, on
//! another stack. (A busy flag cleared at the program's end would miss threads preempted
//! after it, still inside the program for the kernel.)

use trace_common::standby::{RECENT, STRIDE};

use crate::maps::STANDBY;

/// The program itself: notes that it ran for this call, then runs `f`.
#[inline(always)]
pub fn primary(slot: u32, call: u64, f: impl FnOnce() -> u32) -> u32 {
    let base = STRIDE * slot;
    if let Some(next) = STANDBY.get_ptr_mut(base + 1) {
        let i = unsafe {
            *next = (*next + 1) % u64::from(RECENT);
            *next as u32
        };
        if let Some(ran) = STANDBY.get_ptr_mut(base + 2 + i) {
            unsafe { *ran = call };
        }
    }
    f()
}

/// The copy: runs `f` unless the program ran for this call.
#[inline(always)]
pub fn standby(slot: u32, call: u64, f: impl FnOnce() -> u32) -> u32 {
    let base = STRIDE * slot;
    for i in 0..RECENT {
        if let Some(ran) = STANDBY.get_ptr_mut(base + 2 + i)
            && unsafe { *ran } == call
        {
            unsafe { *ran = 0 };
            return 0;
        }
    }
    if let Some(n) = STANDBY.get_ptr_mut(base) {
        unsafe { *n += 1 };
    }
    f()
}

/// Defines a program and its standby copy: one body, two programs on the same hook.
/// `with_standby!(#[attach attribute] fn program, sb_program(ctx: Context) { body })`.
macro_rules! with_standby {
    ($(#[$attr:meta])* fn $name:ident, $copy:ident($ctx:ident: $ty:ty) $body:block) => {
        $(#[$attr])*
        pub fn $name($ctx: $ty) -> u32 {
            const SLOT: u32 = trace_common::standby::slot(stringify!($name));
            $crate::standby::primary(SLOT, aya_ebpf::EbpfContext::as_ptr(&$ctx) as u64, || $body)
        }

        $(#[$attr])*
        pub fn $copy($ctx: $ty) -> u32 {
            const SLOT: u32 = trace_common::standby::slot(stringify!($name));
            $crate::standby::standby(SLOT, aya_ebpf::EbpfContext::as_ptr(&$ctx) as u64, || $body)
        }
    };
}

pub(crate) use with_standby;
