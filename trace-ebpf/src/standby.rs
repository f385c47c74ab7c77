//! Standby copies of programs (see `trace_common::standby`): the kernel skips a program on
//! a CPU where it is already running: a thread preempted inside it (kernels that run BPF
//! programs preemptibly), or the task a softirq interrupted inside it. The copy runs right
//! after the program on the same hook (the loader attaches them in that order) and must
//! tell whether the program ran for this call of the hook: the program counts its runs, the
//! copy the runs it has seen; a run the copy has not seen yet is this call's.
//!
//! The counts are per thread, as a thread may be preempted between the two programs (and
//! move to another CPU) while others run the program, and per level, as a softirq runs on
//! top of the thread it interrupted, as that thread: a call in a softirq between the task's
//! program and its copy must not take the task's run for its own (a softirq's counts are
//! its CPU's). The level is where the
//! hook's arguments are: on the thread's stack (the task itself) or not (a softirq, on the
//! CPU's interrupt stack). Counts, not a mark of the call: a copy that was skipped itself
//! leaves a run unseen, and the next call the program runs for makes the two agree again;
//! and a task's program, when it runs, settles its thread's softirq level, so that a
//! softirq the kernel skips the program for (this task is inside it) finds no run unseen.
//! (A busy flag cleared at the program's end would miss threads preempted after it, still
//! inside the program for the kernel.)

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_smp_processor_id};
use trace_common::standby::{CPUS, THREADS};

use crate::{
    count, kernel,
    maps::{STANDBY, STANDBY_MARKS},
};

/// (program's runs, copy's runs seen) for program `slot`: at level 0 this thread's (it may
/// be preempted between the two, and move), at level 1 this CPU's (a softirq runs to its
/// end on its CPU, and softirqs do not nest: one CPU's never interleave, whichever thread
/// they interrupted; no two threads' ids can then meet modulo [`THREADS`] there).
#[inline(always)]
fn counts(slot: u32, level: u32) -> Option<(*mut u64, *mut u64)> {
    let who = if level == 0 {
        let tid = bpf_get_current_pid_tgid() as u32;
        // Every CPU's idle task is thread 0: by CPU (it never moves).
        if tid == 0 {
            THREADS + unsafe { bpf_get_smp_processor_id() } % CPUS
        } else {
            tid % THREADS
        }
    } else {
        THREADS + CPUS + unsafe { bpf_get_smp_processor_id() } % CPUS
    };
    let i = 2 * (slot * (THREADS + 2 * CPUS) + who);
    Some((
        STANDBY_MARKS.get_ptr_mut(i)?,
        STANDBY_MARKS.get_ptr_mut(i + 1)?,
    ))
}

/// 0 when the hook's arguments (`call`) are on the current thread's stack (the task
/// itself), 1 when not (an interrupt's stack: a softirq on top of it).
#[inline(always)]
fn level(call: u64) -> u32 {
    let task = unsafe { bpf_get_current_task() };
    // Compared, not subtracted: the verifier refuses arithmetic on the context pointer.
    match kernel::task_stack(task) {
        Some((lo, size)) if call >= lo && call < lo.wrapping_add(size) => 0,
        _ => 1,
    }
}

/// A bit per slot whose copy is attached; set by the loader. Where programs are not
/// preempted most copies are left out, and their programs need not count their runs.
#[unsafe(no_mangle)]
static MARK_CALLS: u32 = 0;

/// The program itself: counts this run (for its copy, if attached), then runs `f`.
#[inline(always)]
pub fn primary(slot: u32, call: u64, f: impl FnOnce() -> u32) -> u32 {
    if unsafe { core::ptr::read_volatile(&raw const MARK_CALLS) } & (1 << slot) != 0 {
        let level = level(call);
        if let Some((ran, _)) = counts(slot, level) {
            unsafe { *ran += 1 };
        }
        if level == 0
            && let Some((ran, seen)) = counts(slot, 1)
        {
            // No softirq call of this thread sits between a run and its copy now.
            unsafe { *seen = *ran };
        }
    }
    f()
}

/// The copy: runs `f` unless the program ran for this call.
#[inline(always)]
pub fn standby(slot: u32, call: u64, f: impl FnOnce() -> u32) -> u32 {
    let Some((ran, seen)) = counts(slot, level(call)) else {
        return 0;
    };
    unsafe {
        if *ran != *seen {
            *seen = *ran;
            return 0;
        }
    }
    if let Some(n) = STANDBY.get_ptr_mut(slot) {
        count::add(unsafe { &mut *n }, 1);
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
