//! Types shared by the eBPF programs and the `sockbuf` loader.
//!
//! Every record in the ring buffer starts with a [`Header`]; its `kind` (a stable
//! [`EventKind`] id) says which struct follows. All fields are fixed-width integers so that
//! both sides agree on the layout byte for byte; the size assertions below pin it.
#![no_std]

// The user side's decoded events box the rare large one.
#[cfg(feature = "user")]
extern crate alloc;

pub mod agg;
pub mod calls;
pub mod tcp_state;
#[cfg(feature = "user")]
pub mod user;

/// Length of a task's `comm`, as the kernel keeps it.
pub const COMM_LEN: usize = 16;

/// Names of the maps, shared so the loader asks for exactly what the programs define.
pub mod maps {
    /// Ring buffer that carries every event to userspace.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU counters: events dropped because the ring buffer was full, and the others
    /// of [`crate::counters`].
    pub const LOST: &str = "LOST";
    /// Send calls in progress, by thread id modulo [`crate::INFLIGHT_ENTRIES`].
    pub const INFLIGHT_SLOTS: &str = "INFLIGHT_SLOTS";
    /// Send calls in progress of threads whose slot another thread holds, keyed by thread id.
    pub const INFLIGHT: &str = "INFLIGHT";
    /// Per-socket tracking state, keyed by `struct sock` address (LRU, bounded).
    pub const SOCKS: &str = "SOCKS";
    /// UDP send and receive calls in progress, keyed by thread id (kprobe mode: the return
    /// probe has no arguments).
    pub const CALLS: &str = "CALLS";
    /// `sendfile()`, `splice()` and `sendmmsg()` calls in progress, keyed by thread id.
    pub const PIECED: &str = "PIECED";
    /// The `sendfile()`, `splice()`, `sendmmsg()` or `recvmmsg()` each thread is in, by
    /// thread id modulo [`crate::INFLIGHT_ENTRIES`] (where their entries are hooked).
    pub const PIECED_NOW: &str = "PIECED_NOW";
    /// Per CPU, per program with a standby copy: how many runs the copy took over.
    pub const STANDBY: &str = "STANDBY";
    /// Per program with a standby copy, per thread (its id modulo
    /// [`crate::standby::THREADS`]) and level: the program's runs and those its copy saw.
    pub const STANDBY_MARKS: &str = "STANDBY_MARKS";
    /// `--summary`: per CPU and per socket (`sock_id`), the counts of [`crate::agg::SockAgg`].
    /// Userspace takes a socket's entry out when it sees the socket reach CLOSE.
    pub const AGG: &str = "AGG";
    /// `--summary` on BTF-typed hooks: each established socket's counts
    /// ([`crate::agg::SkAgg`]) in its socket-local storage, added to AGG at its CLOSE.
    pub const SK_COUNTS: &str = "SK_COUNTS";
    /// `--summary --full`: per socket (`sock_id`), its writes waiting for their ACK; taken
    /// out by userspace with the socket's AGG entry.
    pub const PENDING: &str = "PENDING";
    /// Sockets `close()` orphaned that turned time-wait before the peer's FIN, keyed by
    /// their addresses (LRU): what that FIN's event needs (function backends).
    pub const TIMEWAIT: &str = "TIMEWAIT";
    /// `--stacks`: kernel and user stacks by id (a stack-trace map; its size is set by the
    /// loader).
    pub const STACKS: &str = "STACKS";
}

/// Standby copies. Where the kernel runs BPF programs preemptibly (7.x), a thread preempted
/// inside a program keeps it busy on that CPU, and the kernel skips the program for every
/// other thread that reaches the hook there meanwhile (`recursion_misses`): with two busy
/// threads on one CPU, up to a third of the events. Each program listed here has a copy,
/// attached to the same hook to run after it, that does the work only when the program did
/// not run for this call of the hook. Not listed: hooks that run with preemption off
/// (`sched_switch`), and kprobes (one busy flag per CPU for all kprobe and classic tracepoint
/// programs, so a copy would be skipped too).
pub mod standby {
    /// (program, its standby copy). The index is the program's slot in [`crate::maps::STANDBY`].
    pub const PROGRAMS: &[(&str, &str)] = &[
        // At most 32: MARK_CALLS has a bit per slot.
        ("send_tcp_sendmsg_locked", "sb_send_tcp_sendmsg_locked"),
        ("send_sock_send_length", "sb_send_sock_send_length"),
        ("ack_tcp_probe", "sb_ack_tcp_probe"),
        ("recv_sock_recv_length", "sb_recv_sock_recv_length"),
        ("life_inet_sock_set_state", "sb_life_inet_sock_set_state"),
        ("life_tcp_send_reset", "sb_life_tcp_send_reset"),
        (
            "life_tcp_send_reset_reason",
            "sb_life_tcp_send_reset_reason",
        ),
        ("life_tcp_receive_reset", "sb_life_tcp_receive_reset"),
        ("life_net_dev_queue", "sb_life_net_dev_queue"),
        ("entry_sys_enter", "sb_entry_sys_enter"),
        ("send_tcp_sendmsg_fentry", "sb_send_tcp_sendmsg_fentry"),
        ("send_tcp_sendmsg_fexit", "sb_send_tcp_sendmsg_fexit"),
        (
            "block_sk_stream_wait_memory_fentry",
            "sb_block_sk_stream_wait_memory_fentry",
        ),
        (
            "block_sk_stream_wait_memory_fexit",
            "sb_block_sk_stream_wait_memory_fexit",
        ),
        (
            "ack_tcp_rcv_established_fentry",
            "sb_ack_tcp_rcv_established_fentry",
        ),
        ("udp_udp_sendmsg_fexit", "sb_udp_udp_sendmsg_fexit"),
        ("udp_udpv6_sendmsg_fexit", "sb_udp_udpv6_sendmsg_fexit"),
        ("recv_tcp_recvmsg_fexit", "sb_recv_tcp_recvmsg_fexit"),
        ("recv_udp_recvmsg_fexit", "sb_recv_udp_recvmsg_fexit"),
        ("recv_udpv6_recvmsg_fexit", "sb_recv_udpv6_recvmsg_fexit"),
        ("calls_sys_exit", "sb_calls_sys_exit"),
        ("layer_sys_enter", "sb_layer_sys_enter"),
        ("layer_sock_send_length", "sb_layer_sock_send_length"),
        (
            "recv_tcp_splice_read_fexit",
            "sb_recv_tcp_splice_read_fexit",
        ),
        (
            "send_tcp_sendmsg_locked_btf",
            "sb_send_tcp_sendmsg_locked_btf",
        ),
        ("send_sock_send_length_btf", "sb_send_sock_send_length_btf"),
        ("ack_tcp_probe_btf", "sb_ack_tcp_probe_btf"),
        ("recv_sock_recv_length_btf", "sb_recv_sock_recv_length_btf"),
        ("life_net_dev_queue_btf", "sb_life_net_dev_queue_btf"),
        (
            "life_inet_sock_set_state_btf",
            "sb_life_inet_sock_set_state_btf",
        ),
    ];

    /// Programs whose copy is attached on every kernel, preemptible or not: a state change
    /// in a task (`close()`) can be interrupted by a softirq changing another socket's state
    /// on the same CPU, and the kernel skips the program there. Under connection churn that
    /// lost about one CLOSE in 10 000, and the summary needs every CLOSE to free a socket's
    /// counts. They are rare events: their copies cost little.
    pub const ALWAYS: &[&str] = &[
        "life_inet_sock_set_state",
        "life_inet_sock_set_state_btf",
        "life_tcp_send_reset",
        "life_tcp_send_reset_reason",
        "life_tcp_receive_reset",
    ];

    /// Whether `program`'s copy is attached when copies are not attached in general.
    pub fn always(program: &str) -> bool {
        ALWAYS.contains(&program)
    }

    /// The `MARK_CALLS` global: a bit per slot whose program must mark its calls (every
    /// slot when all copies are attached, else those of [`ALWAYS`]).
    pub fn mark_mask(all: bool) -> u32 {
        if all {
            return u32::MAX;
        }
        ALWAYS
            .iter()
            .filter_map(|p| of(p))
            .fold(0, |m, (slot, _)| m | 1 << slot)
    }

    const _: () = assert!(PROGRAMS.len() <= 32);

    /// Threads told apart per program in [`crate::maps::STANDBY_MARKS`].
    pub const THREADS: u32 = 4096;
    /// Entries of [`crate::maps::STANDBY`] per CPU.
    pub const COUNTERS: u32 = PROGRAMS.len() as u32;
    /// CPUs told apart (softirqs' counts, and idle tasks'), the same modulo this.
    pub const CPUS: u32 = 1024;
    /// Entries of [`crate::maps::STANDBY_MARKS`]: per program, the program's runs and
    /// those its copy has seen, for each thread (tasks), each CPU's idle task, and each
    /// CPU's softirqs.
    pub const MARKS: u32 = 2 * (THREADS + 2 * CPUS) * PROGRAMS.len() as u32;

    /// `program`'s slot; a compile error (in a const) for a program not listed.
    pub const fn slot(program: &str) -> u32 {
        let mut i = 0;
        while i < PROGRAMS.len() {
            if str_eq(PROGRAMS[i].0, program) {
                return i as u32;
            }
            i += 1;
        }
        panic!("program has no standby slot")
    }

    /// The slot and standby copy of `program`, if it has one.
    pub fn of(program: &str) -> Option<(u32, &'static str)> {
        PROGRAMS
            .iter()
            .position(|(p, _)| *p == program)
            .map(|i| (i as u32, PROGRAMS[i].1))
    }

    /// Whether `program` is a standby copy.
    pub fn is_copy(program: &str) -> bool {
        PROGRAMS.iter().any(|(_, sb)| *sb == program)
    }

    const fn str_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// Names of the read-only globals the loader sets before load.
pub mod globals {
    pub const FILTER: &str = "FILTER";
    pub const KOFFSETS: &str = "KOFFSETS";
    /// u64: bytes in the ring buffer before the reader is woken (0: the kernel's default).
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// u32: whether the per-call events are counted in [`crate::maps::AGG`] instead of
    /// streamed (`--summary`), and how much: one of [`crate::agg::Level`].
    pub const AGGREGATE: &str = "AGGREGATE";
    /// u32: a bit per standby slot whose copy is attached, so that its program marks each
    /// call it runs for (see [`crate::standby::mark_mask`]).
    pub const MARK_CALLS: &str = "MARK_CALLS";
    /// u64: `tcp_sendmsg`'s address, to tell sockets with a layer above TCP (kTLS); 0 when
    /// unknown.
    pub const TCP_SENDMSG: &str = "TCP_SENDMSG";
    /// u32: which calls' stacks are taken, one of [`crate::stacks`].
    pub const STACKS: &str = "STACKS_MODE";
    /// u32: whether the entries of `sendfile()`, `splice()`, `sendmmsg()` and `recvmmsg()`
    /// are hooked, so that a thread's slot of [`crate::maps::PIECED_NOW`] says whether it is
    /// in one of them.
    pub const PIECED_AT_ENTRY: &str = "PIECED_AT_ENTRY";
    /// u32: the network namespace (inode number) whose sockets keep their `--summary`
    /// counts in [`crate::maps::SK_COUNTS`] (BTF-typed hooks, without `--full`); 0: none.
    pub const SK_COUNTING: &str = "SK_COUNTING";
}

/// Slots of the per-CPU counter array [`maps::LOST`].
pub mod counters {
    /// Events dropped because the ring buffer was full.
    pub const LOST_EVENTS: u32 = 0;
    /// Events abandoned: a kernel read failed, or a map refused an entry.
    pub const READ_ERRORS: u32 = 1;
    /// `--summary`: calls streamed as events because AGG had no room for their socket.
    pub const AGG_STREAMED: u32 = 2;
    /// The per-CPU count behind synthetic socket ids (not a counter to report).
    pub const NEXT_ID: u32 = 3;
    /// `sendfile()`/`splice()`/`sendmmsg()` calls whose exit the kernel skipped (found at
    /// the thread's next syscall exit): their `call` event has no result.
    pub const EXITS_MISSED: u32 = 4;
    /// `--stacks`: stacks not taken (the stack map had no room, or the walk failed).
    pub const STACKS_LOST: u32 = 5;
}

/// Entries of [`maps::LOST`].
pub const COUNTER_SLOTS: u32 = 6;

/// Capacity of [`maps::INFLIGHT_SLOTS`] and [`maps::INFLIGHT`]: one entry per thread inside
/// a send call.
pub const INFLIGHT_ENTRIES: u32 = 16_384;
const _: () = assert!(
    INFLIGHT_ENTRIES.is_power_of_two(),
    "slots are chosen by a mask"
);

/// Capacity of [`maps::SOCKS`]: least recently used sockets are evicted past this.
pub const SOCKS_ENTRIES: u32 = 65_536;
/// Capacity of [`maps::TIMEWAIT`]: least recently closed sockets are evicted past this.
pub const TIMEWAIT_ENTRIES: u32 = 8_192;

/// Stable numeric ids of event kinds. Never renumber: JSON consumers and old captures rely on them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// One send call on a TCP socket: [`SendEvent`].
    Send = 1,
    /// A sender slept in the kernel because the send buffer was full: [`BlockEvent`].
    Block = 2,
    /// The peer's ACK moved `snd_una` past traced bytes: [`AckEvent`].
    Ack = 3,
    /// A sender fell asleep inside a send call on a full send buffer: [`BlockEvent`] with
    /// `end_ns == 0`; the `Block` event follows when it runs again.
    BlockStart = 4,
    /// One receive call: [`RecvEvent`].
    Recv = 5,
    /// A TCP socket changed state: [`SockEvent`] with `old_state`/`new_state`.
    State = 6,
    /// The socket sent a RST: [`SockEvent`] with `reason`.
    RstOut = 7,
    /// The socket received a RST: [`SockEvent`].
    RstIn = 8,
    /// A segment carrying the socket's FIN left: [`SockEvent`] with `seq`.
    FinOut = 9,
    /// The peer's FIN arrived: [`SockEvent`] with `seq`.
    FinIn = 10,
    /// One send call on a UDP socket: [`UdpEvent`].
    UdpSend = 11,
    /// A UDP datagram left the socket for the device: [`UdpEvent`], `ret` its payload bytes.
    UdpOut = 12,
    /// A `sendfile()`, `splice()` or `sendmmsg()` returned: [`calls::CallEvent`].
    Call = 13,
    /// The top of a task's user stack, just before the event whose stacks were taken
    /// (`--stacks`): [`StackTopEvent`].
    StackTop = 14,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Send),
            2 => Some(Self::Block),
            3 => Some(Self::Ack),
            4 => Some(Self::BlockStart),
            5 => Some(Self::Recv),
            6 => Some(Self::State),
            7 => Some(Self::RstOut),
            8 => Some(Self::RstIn),
            9 => Some(Self::FinOut),
            10 => Some(Self::FinIn),
            11 => Some(Self::UdpSend),
            12 => Some(Self::UdpOut),
            13 => Some(Self::Call),
            14 => Some(Self::StackTop),
            _ => None,
        }
    }
}

/// First bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct Header {
    /// An [`EventKind`] id.
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// Thread group id (what userspace calls the pid); 0 where no task is involved (ACKs).
    pub pid: u32,
    /// Kernel task id (what userspace calls the tid).
    pub tid: u32,
    /// The socket's identity for the whole session, known from its first event: its inode
    /// number (the `ino` that `ss -e` prints and `fstat` returns) when it had one when
    /// sockbuf first met it; otherwise (an accepted connection met before `accept()` gave
    /// it a file) a number from [`SYNTHETIC_IDS`] up, never an inode.
    pub sock_id: u64,
    /// The socket's inode number as now known; 0 before `accept()` and after `close()`.
    pub ino: u64,
}

/// Socket ids from here up are sockbuf's own (inode numbers of sockets are 32-bit): the
/// CPU that met the socket in bits 32..40, a per-CPU count below.
pub const SYNTHETIC_IDS: u64 = 1 << 40;

/// Where a socket's bytes go. Addresses are in network byte order; IPv4 uses the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct SockAddrs {
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local port, host byte order.
    pub lport: u16,
    /// Remote port, host byte order.
    pub rport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// A TCP socket's send side at one moment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct SendQueue {
    /// `sk_sndbuf`: the send buffer's limit in bytes of memory (what SO_SNDBUF reads back).
    pub sndbuf: u32,
    /// `sk_wmem_queued`: memory charged to the send queue, skb overhead included.
    pub wmem_queued: u32,
    /// `write_seq - snd_una`: bytes not yet acked (netstat's Send-Q, SIOCOUTQ).
    pub send_q: u32,
    /// `write_seq - snd_nxt`: of those, bytes never sent (SIOCOUTQNSD).
    pub unsent: u32,
    /// `snd_nxt - snd_una`: of those, bytes sent and awaiting an ACK.
    pub in_flight: u32,
    #[cfg_attr(feature = "user", serde(skip))]
    pub _pad: u32,
    /// `bytes_acked`: the stream offset the peer has acknowledged (relative to the first byte).
    pub acked: u64,
}

/// One send call on a TCP socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct SendEvent {
    pub hdr: Header,
    pub comm: [u8; COMM_LEN],
    pub addrs: SockAddrs,
    /// When the call entered TCP's copy loop (0 when it never did); `hdr.ts_ns` is its return.
    pub start_ns: u64,
    /// Bytes the caller asked to send (valid when [`SEND_F_REQUESTED`] is set).
    pub requested: u64,
    /// What the call returned: bytes copied into the send buffer, or `-errno`.
    pub ret: i64,
    /// The call's `MSG_*` flags (`MSG_DONTWAIT` for a non-blocking file).
    pub msg_flags: u32,
    /// `SEND_F_*` bits.
    pub flags: u32,
    /// The send queue after the copy.
    pub queue: SendQueue,
    /// Stream offset just past this write's last byte (`bytes_acked + write_seq - snd_una`).
    pub seq_end: u64,
    /// The application's call this was (or was a piece of).
    pub call: calls::CallRef,
    /// Bytes the call put into TCP's send queue (valid when [`SEND_F_TCP_BYTES`] is set):
    /// `ret` for plain TCP; on a kTLS socket the records it pushed, headers and tags
    /// included (or none yet: a record left open by `MSG_MORE`).
    pub tcp_bytes: u64,
    /// Where the call returned from (`--stacks`: an EAGAIN, or with `--stacks all` any call).
    pub stacks: StackIds,
}

/// A task's kernel and user stacks, as ids in [`maps::STACKS`] ([`NO_STACK`]: not taken, or
/// lost: see [`counters::STACKS_LOST`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct StackIds {
    pub kernel: u32,
    pub user: u32,
}

/// A [`StackIds`] id that names no stack.
pub const NO_STACK: u32 = u32::MAX;

/// Words of [`StackTopEvent::words`].
pub const STACK_TOP_WORDS: usize = 64;

/// The words at the top of a task's user stack when its stacks were taken, emitted just
/// before the event they belong to. The frame-pointer walk behind a user stack skips the
/// caller of a function that keeps no frame pointer (a libc syscall wrapper: its caller's
/// return address sits on the stack, not in the frame chain), and stops in code built
/// without them (Rust's std); user space finds the return addresses here.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackTopEvent {
    pub hdr: Header,
    /// The user stack pointer the syscall saved.
    pub sp: u64,
    /// The words from `sp` up (0s where the read failed).
    pub words: [u64; STACK_TOP_WORDS],
}

impl StackIds {
    pub const NONE: Self = Self {
        kernel: NO_STACK,
        user: NO_STACK,
    };

    pub fn any(&self) -> bool {
        self.kernel != NO_STACK || self.user != NO_STACK
    }
}

/// Which calls' stacks are taken ([`globals::STACKS`]).
pub mod stacks {
    pub const OFF: u32 = 0;
    /// Sleeps on a full send buffer and EAGAINs.
    pub const WAITS: u32 = 1;
    /// Those and every send call.
    pub const ALL: u32 = 2;
}

/// [`SendEvent::requested`] is known (the kernel reached its copy loop).
pub const SEND_F_REQUESTED: u32 = 1 << 0;
/// The call slept at least once waiting for send-buffer space.
pub const SEND_F_BLOCKED: u32 = 1 << 1;
/// An error the application never saw: this piece's call (`sendfile`, `splice`, `sendmmsg`)
/// returned what its earlier pieces copied.
pub const SEND_F_UNSEEN: u32 = 1 << 2;
/// [`SendEvent::tcp_bytes`] is known: the call was seen from the syscall's entry.
pub const SEND_F_TCP_BYTES: u32 = 1 << 3;
/// The socket's `sendmsg` is not TCP's: a layer (kTLS) between the application and TCP.
pub const SEND_F_LAYERED: u32 = 1 << 4;

/// A sender slept inside a send call because the send buffer was full.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct BlockEvent {
    pub hdr: Header,
    pub comm: [u8; COMM_LEN],
    /// When the task went to sleep (same clock as [`Header::ts_ns`]).
    pub start_ns: u64,
    /// When it ran again inside the same send call.
    pub end_ns: u64,
    /// Bytes of the call still waiting to be copied when it fell asleep.
    pub left: u64,
    /// The send queue when it fell asleep.
    pub queue: SendQueue,
    /// Where it fell asleep (`--stacks`).
    pub stacks: StackIds,
}

/// The peer's ACK advanced over bytes a traced write put in the stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct AckEvent {
    pub hdr: Header,
    /// Stream offset acknowledged before this ACK.
    pub prev_acked: u64,
    /// Stream offset acknowledged by this ACK: every byte below it reached the peer.
    pub acked: u64,
}

/// A socket's receive side at one moment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct RecvQueue {
    /// `sk_rcvbuf`: the receive buffer's limit in bytes of memory (SO_RCVBUF).
    pub rcvbuf: u32,
    /// `sk_rmem_alloc`: memory charged to the receive queue, skb overhead included.
    pub rmem_alloc: u32,
    /// TCP: `rcv_nxt - copied_seq`, bytes received and not yet read (Recv-Q). Like the
    /// sequence space, and unlike SIOCINQ, it counts an arrived FIN as one byte until read.
    pub recv_q: u32,
    #[cfg_attr(feature = "user", serde(skip))]
    pub _pad: u32,
    /// TCP: `bytes_received` (TCP_INFO's `tcpi_bytes_received`), every byte the peer sent
    /// that arrived in order; one more once its FIN arrived.
    pub received: u64,
}

/// One receive call (any protocol sockbuf traces: TCP or UDP).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct RecvEvent {
    pub hdr: Header,
    pub comm: [u8; COMM_LEN],
    pub addrs: SockAddrs,
    /// Bytes copied out of the receive buffer, or `-errno`.
    pub ret: i64,
    /// The call's `MSG_*` flags (`MSG_PEEK`, `MSG_DONTWAIT`…), where the hook sees them.
    pub msg_flags: u32,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u32,
    /// The receive queue after the copy.
    pub queue: RecvQueue,
    /// The application's call this was (or was a piece of: `recvmmsg()`'s messages).
    pub call: calls::CallRef,
    /// `RECV_F_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

/// An error the application never saw: this piece's `recvmmsg()` (or, for a UDP send,
/// `sendmmsg()`) returned the messages before it.
pub const RECV_F_UNSEEN: u32 = 1 << 0;

/// A TCP connection's lifecycle: a state change, a RST or a FIN. Which fields mean something
/// depends on `hdr.kind` (see each field).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct SockEvent {
    pub hdr: Header,
    /// The task running when it happened: the caller for `close()`/`connect()`, whichever
    /// task was interrupted for changes driven by an arriving packet (as bcc's tcpstates).
    pub comm: [u8; COMM_LEN],
    pub addrs: SockAddrs,
    /// `State`: the `TCP_*` state before; 0 for other kinds.
    pub old_state: u32,
    /// `State`: the state after; other kinds: the socket's state at the event.
    pub new_state: u32,
    /// `RstOut`: the kernel's `sk_rst_reason` (`u32::MAX` where the kernel does not say).
    pub reason: u32,
    pub _pad: u32,
    /// `FinOut`: the FIN's stream offset, numbered as send events' `seq_end` (it follows the
    /// write whose `seq_end` it equals). `FinIn`: data bytes received before the FIN.
    pub seq: u64,
    pub send: SendQueue,
    pub recv: RecvQueue,
}

/// One UDP send call (`UdpSend`) or one datagram leaving (`UdpOut`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct UdpEvent {
    pub hdr: Header,
    pub comm: [u8; COMM_LEN],
    pub addrs: SockAddrs,
    /// `UdpSend`: bytes accepted or `-errno`; `UdpOut`: the datagram's payload bytes.
    pub ret: i64,
    /// `UdpSend`: the call's `MSG_*` flags (`MSG_MORE` = 0x8000).
    pub msg_flags: u32,
    /// `sk_sndbuf`.
    pub sndbuf: u32,
    /// `sk_wmem_alloc` (less the socket's own reference, as SIOCOUTQ): memory of this
    /// socket's datagrams not yet freed after transmission.
    pub wmem_alloc: u32,
    /// Payload bytes corked (held by `MSG_MORE` or `UDP_CORK`) after the call:
    /// `udp_sock.len` less the UDP header.
    pub corked: u32,
    /// Non-zero while a corked datagram is pending (`udp_sock.pending`).
    pub pending: u32,
    /// `UdpSend`: `RECV_F_UNSEEN` when the error is one the application never saw (a
    /// `sendmmsg()` returned the messages sent before it).
    pub flags: u32,
    /// `UdpSend`: the application's call this was (or was a piece of: `sendmmsg()`'s
    /// messages).
    pub call: calls::CallRef,
}

/// Filters, set by the loader before load; an event that fails one never reaches the ring buffer.
/// Zero means "no filter" for every field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct Filter {
    /// Thread group id.
    pub pid: u32,
    /// Local or remote port.
    pub port: u16,
    pub _pad: u16,
    /// cgroup v2 id (the cgroup directory's inode number).
    pub cgroup: u64,
    /// Task comm, NUL padded; empty means any.
    pub comm: [u8; COMM_LEN],
}

/// Byte offsets of the kernel struct fields the programs read, taken from the running
/// kernel's BTF at start-up (aya's Rust programs have no CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct KernelOffsets {
    // struct sock / sock_common
    pub sk_family: u32,
    pub sk_num: u32,
    pub sk_dport: u32,
    pub sk_rcv_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    pub sk_protocol: u32,
    pub sk_type: u32,
    pub sk_sndbuf: u32,
    pub sk_wmem_queued: u32,
    pub sk_socket: u32,
    // struct tcp_sock
    pub tp_write_seq: u32,
    pub tp_snd_una: u32,
    pub tp_snd_nxt: u32,
    pub tp_bytes_acked: u32,
    // struct socket_alloc / inode: the socket's inode number
    pub socket_alloc_inode: u32,
    pub inode_ino: u32,
    // struct msghdr / iov_iter
    pub msg_iter_count: u32,
    pub msg_flags: u32,
    // struct sk_buff, and struct tcp_skb_cb inside its `cb`
    pub skb_cb: u32,
    pub tcb_ack_seq: u32,
    pub tcb_tcp_flags: u32,
    pub tcb_end_seq: u32,
    pub sk_state: u32,
    // receive side
    pub sk_rcvbuf: u32,
    pub sk_rmem_alloc: u32,
    pub sk_wmem_alloc: u32,
    pub tp_rcv_nxt: u32,
    pub tp_copied_seq: u32,
    pub tp_bytes_received: u32,
    // struct udp_sock
    pub up_pending: u32,
    pub up_len: u32,
    // struct sk_buff, for segments leaving
    pub skb_sk: u32,
    pub skb_head: u32,
    pub skb_transport_header: u32,
    /// struct inet_sock
    pub inet_sport: u32,
    // From a file descriptor to its socket (kernels without the tcp_sendmsg_locked
    // tracepoint: the send call is seen at the syscall's entry).
    pub task_files: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub file_inode: u32,
    pub file_flags: u32,
    pub inode_mode: u32,
    pub socket_sk: u32,
    /// The task's kernel stack, at whose top the syscall's user registers are saved.
    pub task_stack: u32,
    /// `sock.sk_flags` (unsigned long): `SOCK_DONE` once the peer's FIN was received.
    pub sk_flags: u32,
    /// `task_struct.flags` (`PF_IO_WORKER`: an io_uring worker thread).
    pub task_flags: u32,
    /// `sock.sk_prot` and `struct proto`'s `sendmsg`: a socket whose `sendmsg` is not
    /// `tcp_sendmsg` has a layer above TCP (kTLS).
    pub sk_prot: u32,
    pub proto_sendmsg: u32,
    /// `socket.file`: typed hooks reach the socket's inode number through its file.
    pub socket_file: u32,
    /// `sock_common.skc_net` and `struct net`'s `ns.inum`: the socket's network namespace.
    pub sk_net: u32,
    pub net_inum: u32,
}

const _: () = {
    assert!(core::mem::size_of::<Header>() == 40);
    assert!(core::mem::size_of::<SockAddrs>() == 40);
    assert!(core::mem::size_of::<SendQueue>() == 32);
    assert!(core::mem::size_of::<SendEvent>() == 200);
    assert!(core::mem::size_of::<calls::CallRef>() == 16);
    assert!(core::mem::size_of::<calls::CallEvent>() == 96);
    assert!(core::mem::size_of::<BlockEvent>() == 120);
    assert!(core::mem::size_of::<StackTopEvent>() == 48 + 8 * STACK_TOP_WORDS);
    assert!(core::mem::size_of::<AckEvent>() == 56);
    assert!(core::mem::size_of::<Filter>() == 32);
    assert!(core::mem::size_of::<RecvQueue>() == 24);
    assert!(core::mem::size_of::<RecvEvent>() == 160);
    assert!(core::mem::size_of::<SockEvent>() == 176);
    assert!(core::mem::size_of::<UdpEvent>() == 144);
    assert!(core::mem::size_of::<KernelOffsets>() == 228);
};
