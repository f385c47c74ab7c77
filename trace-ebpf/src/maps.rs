//! Maps shared by every program; their names are `trace_common::maps` constants.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use trace_common::{
    INFLIGHT_ENTRIES, SOCKS_ENTRIES, SendQueue, SockAddrs, StackIds, TIMEWAIT_ENTRIES,
};

/// Carries events to userspace. Its size is set by the loader (`--ring-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU counters: [`LOST_EVENTS`], [`READ_ERRORS`], [`AGG_STREAMED`], and the count
/// behind synthetic socket ids ([`NEXT_ID`]).
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(trace_common::COUNTER_SLOTS, 0);
pub const LOST_EVENTS: u32 = trace_common::counters::LOST_EVENTS;
pub const READ_ERRORS: u32 = trace_common::counters::READ_ERRORS;
pub const AGG_STREAMED: u32 = trace_common::counters::AGG_STREAMED;
pub const NEXT_ID: u32 = trace_common::counters::NEXT_ID;
pub const EXITS_MISSED: u32 = trace_common::counters::EXITS_MISSED;

/// Per CPU, per program with a standby copy: the runs the copy took.
#[map]
pub static STANDBY: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(trace_common::standby::COUNTERS, 0);

/// Per program with a standby copy, per thread and level: the program's runs and those its
/// copy has seen (see `standby`). Not per CPU: a thread may move to another CPU between the
/// program and its copy.
#[map]
pub static STANDBY_MARKS: Array<u64> = Array::with_max_entries(trace_common::standby::MARKS, 0);

/// A send call in progress on one thread, from its first pass through the TCP copy loop to
/// the syscall's return. Deleted at the return, so it holds one entry per thread in a call.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Inflight {
    pub sk: u64,
    /// The call's `struct msghdr *`; 0 when the call was seen at the syscall's entry.
    pub msg: u64,
    /// Without a msghdr: `write_seq` at entry, to tell how much of the call was copied.
    pub seq0: u32,
    /// The thread whose call it is; 0 in a free slot of [`INFLIGHT_SLOTS`].
    pub tid: u32,
    /// The socket's `sock_id` and inode, read once when the call opens (they cannot change
    /// during it).
    pub id: u64,
    pub ino: u64,
    pub start_ns: u64,
    pub requested: u64,
    pub msg_flags: u32,
    pub flags: u32,
    /// Non-zero while the thread sleeps for send-buffer space.
    pub block_start: u64,
    pub block_left: u64,
    pub block_queue: SendQueue,
    /// Where the thread fell asleep (`--stacks`).
    pub block_stacks: StackIds,
}

/// Open calls by thread id modulo its size (see `inflight`).
#[map]
pub static INFLIGHT_SLOTS: Array<Inflight> = Array::with_max_entries(INFLIGHT_ENTRIES, 0);

/// The name of the thread that last held the same slot of [`INFLIGHT_SLOTS`], kept when its
/// call closes: its next call reuses it while `key` (`filter::thread_key`) still matches.
/// Written only by the slot's holder. Beside the slots rather than in them: a field there
/// would be zeroed by a `memset` call in every call's literal.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct ThreadComm {
    /// The name as `bpf_get_current_comm` writes it, in words (a byte array's copy is a
    /// byte loop).
    pub comm: [u64; 2],
    pub key: u64,
}

#[map]
pub static INFLIGHT_COMMS: Array<ThreadComm> = Array::with_max_entries(INFLIGHT_ENTRIES, 0);

/// The comm filter's verdicts on the threads whose ids are the same modulo its size: the last
/// `filter::thread_key` that passed and the last that failed (0: none).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct TaskVerdict {
    pub passed: u64,
    pub failed: u64,
}

#[map]
pub static TASK_VERDICTS: Array<TaskVerdict> = Array::with_max_entries(INFLIGHT_ENTRIES, 0);

/// Open calls of threads whose slot in [`INFLIGHT_SLOTS`] another thread holds.
#[map]
pub static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(INFLIGHT_ENTRIES, 0);

/// What the ACK path needs to know of a socket that traced writes went to.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SockTrack {
    /// The socket's `sock_id` (see `trace_common::Header`), fixed when the entry is made.
    pub id: u64,
    /// Inode number (0 until an accepted socket gets its file); another one means the
    /// `struct sock` was reused.
    pub ino: u64,
    /// Stream offset just past the last traced write; `u64::MAX` while a traced call is
    /// copying, because on loopback the ACK can come back before the call returns.
    pub write_end: u64,
    /// Addresses and ports, read once: they do not change while the socket lives.
    pub addrs: SockAddrs,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u32,
    pub _pad: u32,
}

/// LRU so it stays bounded however many sockets come and go without a close being seen.
#[map]
pub static SOCKS: LruHashMap<u64, SockTrack> = LruHashMap::with_max_entries(SOCKS_ENTRIES, 0);

/// A socket that `close()` orphaned, turned time-wait before the peer's FIN arrived: the
/// time-wait socket that will meet the FIN is another object, with the same addresses.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct TimeWait {
    pub id: u64,
    pub ino: u64,
    /// Bytes of the peer's stream received (the FIN will follow the last).
    pub received: u64,
}

#[map]
pub static TIMEWAIT: LruHashMap<SockAddrs, TimeWait> =
    LruHashMap::with_max_entries(TIMEWAIT_ENTRIES, 0);

/// A call whose return hook cannot see its arguments (kprobe mode).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Call {
    pub sk: u64,
    pub flags: u32,
    pub _pad: u32,
}

/// UDP send and receive calls in progress (kprobe mode), keyed by thread id.
#[map]
pub static CALLS: LruHashMap<u32, Call> = LruHashMap::with_max_entries(INFLIGHT_ENTRIES, 0);

/// Remembers the current thread's call on `sk` for its return probe.
#[inline(always)]
pub fn put_call(sk: u64, flags: u32) -> Result<(), crate::kernel::Fault> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let call = Call { sk, flags, _pad: 0 };
    CALLS
        .insert(tid, call, 0)
        .map_err(|_| crate::kernel::Fault::InflightFull)
}

/// The current thread's call remembered by [`put_call`], taken out of the map.
#[inline(always)]
pub fn take_call() -> Option<Call> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let call = unsafe { CALLS.get(tid) }.copied()?;
    let _ = CALLS.remove(tid);
    Some(call)
}

/// A `sendfile()`, `splice()` or `sendmmsg()` in progress on one thread, from its first
/// kernel send to the syscall's exit (see `calls`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Pieced {
    pub nr: u32,
    pub pieces: u32,
    pub errors: u32,
    pub _pad: u32,
    pub call_ns: u64,
    pub copied: u64,
    /// The last piece's socket.
    pub id: u64,
    pub ino: u64,
}

#[map]
pub static PIECED: HashMap<u32, Pieced> = HashMap::with_max_entries(INFLIGHT_ENTRIES, 0);
