//! In-kernel filters, set by the loader as a read-only global before load.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
};
use trace_common::{COMM_LEN, Filter, INFLIGHT_ENTRIES};

use crate::{
    kernel::{Access, Fault, Sock},
    maps::TASK_VERDICTS,
};

#[unsafe(no_mangle)]
static FILTER: Global<Filter> = Global::new(Filter {
    pid: 0,
    port: 0,
    _pad: 0,
    cgroup: 0,
    comm: [0; COMM_LEN],
});

/// When a task was last renamed (exec, `prctl(PR_SET_NAME)`, `/proc/…/comm`) or made, as the
/// low 32 bits of the clock, odd; 0 before any: a thread's verdict of the comm filter, or
/// its name, remembered holds while this stays the same. A time, not a count: reading a
/// count back after adding to it is two instructions, and two renames between them would
/// read the same.
static mut RENAMED_AT: u64 = 0;

// The filter is read field by field: `Global::load` would copy all of it, byte by byte.
#[inline(always)]
fn filter() -> *const Filter {
    (&raw const FILTER).cast()
}

/// The comm filter as two words (all zero: none), compared without a byte loop.
#[inline(always)]
fn comm_filter() -> [u64; 2] {
    const _: () = assert!(COMM_LEN == 16 && core::mem::offset_of!(Filter, comm) % 8 == 0);
    unsafe { read_volatile((&raw const (*filter()).comm).cast::<[u64; 2]>()) }
}

/// The pid and cgroup filters: a few loads and at most one cheap helper.
#[inline(always)]
fn pid_cgroup_pass(pid: u32) -> bool {
    let want_pid = unsafe { read_volatile(&raw const (*filter()).pid) };
    if want_pid != 0 && want_pid != pid {
        return false;
    }
    let cgroup = unsafe { read_volatile(&raw const (*filter()).cgroup) };
    cgroup == 0 || cgroup == unsafe { bpf_get_current_cgroup_id() }
}

/// The current task's name is the comm filter's (or there is none).
#[inline(always)]
fn comm_passes() -> bool {
    let want = comm_filter();
    if want[0] == 0 {
        return true; // the name is NUL-padded: no first byte, no filter
    }
    // Zeroed first: older kernels' helper (6.1's) copies up to the NUL and leaves the rest,
    // so the comparison would see stack garbage after the name. Two volatile stores: LLVM
    // made `[0u64; 2]` a call to a byte-loop memset.
    let mut comm = core::mem::MaybeUninit::<[u64; 2]>::uninit();
    let p = comm.as_mut_ptr().cast::<u64>();
    unsafe {
        write_volatile(p, 0);
        write_volatile(p.add(1), 0);
    }
    let ret = unsafe { generated::bpf_get_current_comm(p.cast(), 16) };
    let comm = unsafe { comm.assume_init() };
    ret == 0 && comm == want
}

/// Task-level filters, evaluated before any kernel memory is read: the pid and cgroup at
/// every call (a few loads and at most one cheap helper), the name through the thread's
/// remembered verdict.
#[inline(always)]
pub fn task_passes(pid_tgid: u64) -> bool {
    pid_cgroup_pass((pid_tgid >> 32) as u32) && comm_passes_by_thread(pid_tgid)
}

/// [`task_passes`] for the current task.
#[inline(always)]
pub fn current_task_passes() -> bool {
    task_passes(bpf_get_current_pid_tgid())
}

/// [`comm_passes`], remembered per thread. Reading the task's name costs more than the rest
/// of a counted call, and most calls are by threads seen before: the one writing, and the
/// one reading at the other end, which fails at every call. A thread's slot (its id modulo
/// the map's size) holds the last key (`thread_key`) that passed and the last that failed.
#[inline(always)]
fn comm_passes_by_thread(pid_tgid: u64) -> bool {
    if comm_filter()[0] == 0 {
        return true;
    }
    let Some(slot) = TASK_VERDICTS.get_ptr_mut(pid_tgid as u32 & (INFLIGHT_ENTRIES - 1)) else {
        return comm_passes();
    };
    // Read before the name: a rename stamped after it makes the entry stale at once. (A
    // rename of this thread by another one, through /proc, between the stamp and the copy
    // of the new name can leave the old name's pass until the next rename.)
    let key = thread_key(pid_tgid);
    let passed = unsafe { &raw mut (*slot).passed };
    let failed = unsafe { &raw mut (*slot).failed };
    if unsafe { read_volatile(passed) } == key {
        return true;
    }
    if unsafe { read_volatile(failed) } == key {
        return false;
    }
    let pass = comm_passes();
    // One aligned 8-byte store: a thread sharing the slot reads the old key or the new one,
    // neither of them its own.
    unsafe { write_volatile(if pass { passed } else { failed }, key) };
    pass
}

/// Thread `pid_tgid`'s id with the last rename's stamp: a name read under this key is still
/// the thread's name. Read before the name: a rename stamped after it makes the key stale at
/// once. Never 0, the value of a slot nothing was remembered in (the stamp is odd but for
/// its initial 0; the idle task's id is 0, and softirqs run over it).
#[inline(always)]
pub fn thread_key(pid_tgid: u64) -> u64 {
    ((unsafe { read_volatile(&raw const RENAMED_AT) } | 1) << 32) | (pid_tgid & 0xffff_ffff)
}

/// A task is renamed, or a new one made (its id may be a dead thread's, its name its
/// parent's): every remembered verdict of the comm filter is void.
#[inline(always)]
pub fn renamed() {
    let now = unsafe { bpf_ktime_get_ns() } & 0xffff_ffff;
    unsafe { write_volatile(&raw mut RENAMED_AT, now | 1) };
}

/// Socket-level filter: local or remote port.
#[inline(always)]
pub fn sock_passes<A: Access>(sk: &Sock<A>) -> Result<bool, Fault> {
    let port = unsafe { read_volatile(&raw const (*filter()).port) };
    Ok(port == 0 || sk.lport()? == port || sk.rport()? == port)
}

/// The port filter passes a datagram between these ports.
#[inline(always)]
pub fn ports_pass(lport: u16, rport: u16) -> bool {
    let port = unsafe { read_volatile(&raw const (*filter()).port) };
    port == 0 || lport == port || rport == port
}

/// No task-level filter is set: events that arrive in softirq context, where the current
/// task is whichever one was interrupted, may start tracking a socket only then.
#[inline(always)]
pub fn no_task_filter() -> bool {
    let pid = unsafe { read_volatile(&raw const (*filter()).pid) };
    let cgroup = unsafe { read_volatile(&raw const (*filter()).cgroup) };
    pid == 0 && cgroup == 0 && comm_filter()[0] == 0
}
