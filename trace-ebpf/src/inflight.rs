//! The send call each thread is in: a slot of an array chosen by the thread's id, and a hash
//! map for the rare thread whose slot another thread holds.
//!
//! Why not the hash map alone: a send call inserted and deleted its entry, the largest share
//! of streaming's BPF time after the programs' own code (BENCHMARKS.md); an array lookup is
//! inlined by the verifier into a few instructions, and freeing a slot is one store. A slot
//! is owned by the thread whose id it holds (`Inflight::tid`, 0 when free): only that thread
//! opens and closes it, so no two writers meet; the wake-up path only updates a slot's
//! sleep. Two threads entering a send at the same moment for one free slot can both take
//! it (BPF has no compare-and-swap on its default CPU): docs/limits.md.

use trace_common::INFLIGHT_ENTRIES;

use crate::{
    kernel::Fault,
    maps::{INFLIGHT, INFLIGHT_COMMS, INFLIGHT_SLOTS, Inflight, ThreadComm},
};

/// Non-zero once a call went to the hash map; until then a miss in the array is a miss. A
/// flag, not a count: it would have to be counted down at every close.
static mut OVERFLOWED: u64 = 0;

/// The slot of thread `tid`, whoever holds it.
#[inline(always)]
fn slot(tid: u32) -> Option<*mut Inflight> {
    INFLIGHT_SLOTS.get_ptr_mut(tid & (INFLIGHT_ENTRIES - 1))
}

/// Thread `tid`'s open call.
#[inline(always)]
pub fn get(tid: u32) -> Option<*mut Inflight> {
    let s = slot(tid)?;
    if unsafe { (*s).tid } == tid {
        return Some(s);
    }
    if unsafe { core::ptr::read_volatile(&raw const OVERFLOWED) } == 0 {
        return None;
    }
    INFLIGHT.get_ptr_mut(tid)
}

/// Thread `tid`'s entry in [`INFLIGHT_COMMS`], while it holds its slot (not for a call in
/// the hash map).
#[inline(always)]
pub fn held_comm(tid: u32) -> Option<*mut ThreadComm> {
    let s = slot(tid)?;
    if unsafe { (*s).tid } != tid {
        return None;
    }
    INFLIGHT_COMMS.get_ptr_mut(tid & (INFLIGHT_ENTRIES - 1))
}

/// Opens thread `tid`'s `call` (replacing any it had).
#[inline(always)]
pub fn insert(tid: u32, mut call: Inflight) -> Result<(), Fault> {
    call.tid = tid;
    let s = slot(tid).ok_or(Fault::InflightFull)?;
    let holder = unsafe { (*s).tid };
    if holder == 0 || holder == tid {
        store(s, &call);
        return Ok(());
    }
    unsafe { core::ptr::write_volatile(&raw mut OVERFLOWED, 1) };
    INFLIGHT
        .insert(tid, call, 0)
        .map_err(|_| Fault::InflightFull)
}

/// Writes `c` into slot `s` field by field. A struct copy made LLVM zero the literal's runs of
/// zero fields with calls to a byte-loop `memset` (72 bytes: a tenth of the hook's time).
/// The sleep's fields are left as they are: `block_begin` writes them before they are read.
#[inline(always)]
fn store(s: *mut Inflight, c: &Inflight) {
    use core::ptr::{addr_of_mut, write_volatile};
    unsafe {
        write_volatile(addr_of_mut!((*s).sk), c.sk);
        write_volatile(addr_of_mut!((*s).msg), c.msg);
        write_volatile(addr_of_mut!((*s).seq0), c.seq0);
        write_volatile(addr_of_mut!((*s).id), c.id);
        write_volatile(addr_of_mut!((*s).ino), c.ino);
        write_volatile(addr_of_mut!((*s).start_ns), c.start_ns);
        write_volatile(addr_of_mut!((*s).requested), c.requested);
        write_volatile(addr_of_mut!((*s).msg_flags), c.msg_flags);
        write_volatile(addr_of_mut!((*s).flags), c.flags);
        write_volatile(addr_of_mut!((*s).block_start), 0);
        // Last: the slot is the thread's only once complete.
        write_volatile(addr_of_mut!((*s).tid), c.tid);
    }
}

/// Closes thread `tid`'s call.
#[inline(always)]
pub fn remove(tid: u32) {
    if let Some(s) = slot(tid)
        && unsafe { (*s).tid } == tid
    {
        unsafe { (*s).tid = 0 };
        return;
    }
    if unsafe { core::ptr::read_volatile(&raw const OVERFLOWED) } != 0 {
        let _ = INFLIGHT.remove(tid);
    }
}
