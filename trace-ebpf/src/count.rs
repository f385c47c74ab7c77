//! Counts that more than one program may add to on one CPU.
//!
//! A per-CPU count is not safe from other programs on its CPU: a softirq's program can
//! interrupt a task's between its load and its store, and where the kernel runs BPF
//! programs preemptibly another task's programs (a standby copy among them, see `standby`)
//! can run on that CPU while the first is preempted there. `*n += v` would then drop what
//! they added; BPF's atomic add (`lock *(u64 *)(r + 0) += r`, one instruction for the
//! verifier and a locked add on x86) cannot.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::maps::LOST;

/// Adds `v` to the count at `n` in one instruction.
#[inline(always)]
pub fn add(n: &mut u64, v: u64) {
    // The add's result is not used: the default BPF CPU has the add, not the fetch.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(n, v) };
}

/// Adds one to the current CPU's counter `slot` of `LOST` (`trace_common::counters`), and
/// gives it back read after the add: at least this call's, another program's add may have
/// come in between.
#[inline(always)]
pub fn lost(slot: u32) -> Option<u64> {
    let n = unsafe { &mut *LOST.get_ptr_mut(slot)? };
    add(n, 1);
    Some(unsafe { core::ptr::read_volatile(n) })
}
