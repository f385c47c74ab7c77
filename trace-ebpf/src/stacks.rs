//! `--stacks`: the kernel and user stacks of a task where it waits on a full send buffer or
//! gets EAGAIN (or, with `--stacks all`, of every send call), as ids in [`STACKS`].

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_buf},
    macros::map,
    maps::StackTrace,
    programs::tracing::StackIdContext,
};
use trace_common::{
    EventKind, NO_STACK, StackIds, StackTopEvent, counters::STACKS_LOST, stacks::OFF,
};

use crate::{count, kernel::read, model, syscall};

/// Which calls' stacks are taken (`trace_common::stacks`); set by the loader.
#[unsafe(no_mangle)]
static STACKS_MODE: u32 = OFF;

/// Stacks by id. Sized by the loader (one entry when stacks are off). An id names one stack
/// for as long as the map lives: a stack whose hash bucket holds another is not taken
/// (no `BPF_F_REUSE_STACKID`, which would make ids already given name another stack).
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(1, 0);

const BPF_F_USER_STACK: u64 = 1 << 8;

/// The current task's stacks if stacks are taken at `level` (`trace_common::stacks`).
#[inline(always)]
pub fn take<C: StackIdContext>(ctx: &C, level: u32) -> StackIds {
    let mode = unsafe { read_volatile(&raw const STACKS_MODE) };
    if mode == OFF || mode < level {
        return StackIds::NONE;
    }
    let ids = StackIds {
        kernel: one(ctx, 0),
        user: one(ctx, BPF_F_USER_STACK),
    };
    if ids.user != NO_STACK {
        top();
    }
    ids
}

/// Emits the words at the top of the current task's user stack (see `StackTopEvent`).
#[inline(always)]
fn top() {
    // `struct pt_regs`'s sp.
    const SP: u32 = 152;
    let Ok(Some((regs, _))) = syscall::user_regs() else {
        return;
    };
    let Ok(sp) = read::<u64>(regs, SP) else {
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let now = unsafe { bpf_ktime_get_ns() };
    model::emit(|e: &mut StackTopEvent| {
        e.hdr = model::header(EventKind::StackTop, pid_tgid, 0, 0, now);
        e.sp = sp;
        // SAFETY: `words` is plain memory of the reserved record.
        let words = unsafe {
            core::slice::from_raw_parts_mut(
                e.words.as_mut_ptr().cast::<u8>(),
                core::mem::size_of_val(&e.words),
            )
        };
        if unsafe { bpf_probe_read_user_buf(sp as *const u8, words) }.is_err() {
            e.words = [0; trace_common::STACK_TOP_WORDS];
        }
    });
}

#[inline(always)]
fn one<C: StackIdContext>(ctx: &C, flags: u64) -> u32 {
    match ctx.get_stackid(&STACKS, flags) {
        Ok(id) => id as u32,
        Err(_) => {
            count::lost(STACKS_LOST);
            NO_STACK
        }
    }
}
