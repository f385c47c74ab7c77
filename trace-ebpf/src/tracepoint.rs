//! Tracepoint backend: raw tracepoints, which this kernel has even without kprobes or fentry.
//! Each program only pulls its hook's arguments and calls the model.

use aya_ebpf::{
    EbpfContext,
    macros::{raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, RawTracePointContext, TracePointContext, tracing::StackIdContext,
    },
};
use trace_common::SEND_F_LAYERED;

use crate::{
    calls, entry, filter,
    kernel::{Access, Direct, IPPROTO_TCP, Probe, Sock},
    layer, life, model, recv,
    standby::with_standby,
    syscall::{self, NR_SENDMSG, NR_SENDTO, NR_WRITE, NR_WRITEV},
};

/// A tracepoint's arguments, raw or BTF-typed (`tp_btf`): the programs of both backends
/// share their bodies.
pub trait TracepointArgs: EbpfContext + StackIdContext {
    fn arg_u64(&self, n: usize) -> u64;
    /// Argument `n`, a `struct sock *`, typed for direct loads when it is a TCP socket and
    /// the hook is typed; `None` otherwise (the same socket is then read by probe reads).
    fn typed_sock(&self, n: usize) -> Option<Sock<Direct>>;
    /// How the current task's registers are read: from its BTF-typed pointer where the hook
    /// is typed.
    type Task: Access;
    /// `sk`, a pointer argument of the hook, where the hook is typed (the verifier knows it
    /// as a `struct sock *`, which socket-local storage needs); `None` otherwise.
    fn typed(sk: u64) -> Option<u64>;
}

impl TracepointArgs for RawTracePointContext {
    type Task = Probe;
    #[inline(always)]
    fn arg_u64(&self, n: usize) -> u64 {
        self.arg(n)
    }
    #[inline(always)]
    fn typed_sock(&self, _: usize) -> Option<Sock<Direct>> {
        None
    }
    #[inline(always)]
    fn typed(_: u64) -> Option<u64> {
        None
    }
}

impl TracepointArgs for BtfTracePointContext {
    type Task = Direct;
    #[inline(always)]
    fn arg_u64(&self, n: usize) -> u64 {
        self.arg(n)
    }
    #[inline(always)]
    fn typed_sock(&self, n: usize) -> Option<Sock<Direct>> {
        Sock::typed(self.arg(n))
    }
    #[inline(always)]
    fn typed(sk: u64) -> Option<u64> {
        Some(sk)
    }
}

/// `$call` with `$sock` bound to the hook's socket argument `$n` (`$sk`, its raw value):
/// read by direct loads where the hook is typed and the socket is TCP, by probe reads
/// otherwise (a closure cannot be generic over the two, so the call is written twice).
macro_rules! with_sock {
    ($ctx:expr, $n:expr, $sk:expr, |$sock:ident| $call:expr) => {
        match $ctx.typed_sock($n) {
            Some($sock) => $call,
            None => {
                let $sock = Sock::new($sk);
                $call
            }
        }
    };
}

with_standby! {
    /// `tcp_sendmsg_locked(sk, msg, skb, size_goal)`: each pass of the TCP copy loop.
    #[raw_tracepoint(tracepoint = "tcp_sendmsg_locked")]
    fn send_tcp_sendmsg_locked, sb_send_tcp_sendmsg_locked(ctx: RawTracePointContext) {
        tcp_sendmsg_locked(&ctx)
    }
}

#[inline(always)]
pub fn tcp_sendmsg_locked<C: TracepointArgs>(ctx: &C) -> u32 {
    let a = (ctx.arg_u64(0), ctx.arg_u64(1));
    model::run(ctx, || {
        with_sock!(ctx, 0, a.0, |sock| model::send_begin(sock, a.1))
    })
}

with_standby! {
    /// `sock_send_length(sk, ret, flags)`: every sendmsg's return, any protocol.
    #[raw_tracepoint(tracepoint = "sock_send_length")]
    fn send_sock_send_length, sb_send_sock_send_length(ctx: RawTracePointContext) {
        sock_send_length::<_, false>(&ctx)
    }
}

with_standby! {
    /// The same, for TCP sockets with a layer above TCP only (see `layer`).
    #[raw_tracepoint(tracepoint = "sock_send_length")]
    fn layer_sock_send_length, sb_layer_sock_send_length(ctx: RawTracePointContext) {
        sock_send_length::<_, true>(&ctx)
    }
}

#[inline(always)]
pub fn sock_send_length<C: TracepointArgs, const LAYERED_ONLY: bool>(ctx: &C) -> u32 {
    // Captured by the closure as little as can be (one reference per variable: one tuple):
    // 6.1's verifier rounds each frame of the call chain up to 32 bytes, and the raw
    // program's chain is at its 512-byte limit.
    let a = (ctx.arg_u64(0), i64::from(ctx.arg_u64(1) as i32));
    model::run(ctx, || {
        let ours = || {
            if !LAYERED_ONLY {
                return Ok(true);
            }
            let sock = Sock::new(a.0);
            Ok(sock.protocol()? == IPPROTO_TCP && layer::layered(&sock)?)
        };
        let piece = match model::send_counted::<C::Task>(a.0, C::typed(a.0), a.1, ours)? {
            model::Counted::Done => return Ok(()),
            model::Counted::Left(piece) => piece,
        };
        with_sock!(ctx, 0, a.0, |sock| model::send_traced(
            ctx, sock, a.1, piece
        ))
    })
}

/// `sched_switch(preempt, prev, next, prev_state)`: runs as `prev`, just before it sleeps.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn block_sched_switch(ctx: RawTracePointContext) -> u32 {
    task_sleeps(&ctx)
}

#[inline(always)]
fn task_sleeps(ctx: &RawTracePointContext) -> u32 {
    let preempt: u64 = ctx.arg(0);
    if preempt != 0 {
        return 0;
    }
    // TASK_INTERRUPTIBLE: how sk_stream_wait_memory sleeps (lock and allocation waits do not).
    const TASK_INTERRUPTIBLE: u64 = 0x1;
    let prev_state: u64 = ctx.arg(3);
    if prev_state & TASK_INTERRUPTIBLE == 0 {
        return 0;
    }
    model::run(ctx, || model::block_begin(ctx))
}

with_standby! {
    /// `tcp_probe(sk, skb)`: each segment `tcp_rcv_established` receives, before processing.
    #[raw_tracepoint(tracepoint = "tcp_probe")]
    fn ack_tcp_probe, sb_ack_tcp_probe(ctx: RawTracePointContext) {
        tcp_probe(&ctx)
    }
}

#[inline(always)]
pub fn tcp_probe<C: TracepointArgs>(ctx: &C) -> u32 {
    let a = (ctx.arg_u64(0), ctx.arg_u64(1));
    model::run(ctx, || {
        with_sock!(ctx, 0, a.0, |sock| model::ack(sock, a.1))
    })
}

with_standby! {
    /// `sock_recv_length(sk, ret, flags)`: every recvmsg's return, any protocol.
    #[raw_tracepoint(tracepoint = "sock_recv_length")]
    fn recv_sock_recv_length, sb_recv_sock_recv_length(ctx: RawTracePointContext) {
        sock_recv_length(&ctx)
    }
}

#[inline(always)]
pub fn sock_recv_length<C: TracepointArgs>(ctx: &C) -> u32 {
    // One tuple: the closure captures each variable by reference (see sock_send_length).
    let a = (
        ctx.arg_u64(0),
        i64::from(ctx.arg_u64(1) as i32),
        ctx.arg_u64(2) as u32,
    );
    model::run(ctx, || {
        if recv::recv_counted(a.0, C::typed(a.0), a.1) {
            return Ok(());
        }
        with_sock!(ctx, 0, a.0, |sock| recv::recv_traced(sock, a.1, a.2))
    })
}

// Lifecycle hooks: tracepoints every supported kernel has, attached in every mode.

with_standby! {
    /// `inet_sock_set_state(sk, oldstate, newstate)`.
    #[raw_tracepoint(tracepoint = "inet_sock_set_state")]
    fn life_inet_sock_set_state, sb_life_inet_sock_set_state(ctx: RawTracePointContext) {
        let (old, new): (u64, u64) = (ctx.arg(1), ctx.arg(2));
        model::run(&ctx, || life::state(ctx.arg(0), None, old as u32, new as u32))
    }
}

with_standby! {
    /// `tcp_send_reset(sk, skb)` before Linux 6.10. A raw tracepoint program may not read past
    /// the tracepoint's arguments (the kernel refuses to attach it), hence two programs.
    #[raw_tracepoint(tracepoint = "tcp_send_reset")]
    fn life_tcp_send_reset, sb_life_tcp_send_reset(ctx: RawTracePointContext) {
        model::run(&ctx, || life::rst_out(ctx.arg(0), u32::MAX))
    }
}

with_standby! {
    /// `tcp_send_reset(sk, skb, reason)` from Linux 6.10.
    #[raw_tracepoint(tracepoint = "tcp_send_reset")]
    fn life_tcp_send_reset_reason, sb_life_tcp_send_reset_reason(ctx: RawTracePointContext) {
        let reason: u64 = ctx.arg(2);
        model::run(&ctx, || life::rst_out(ctx.arg(0), reason as u32))
    }
}

with_standby! {
    /// `tcp_receive_reset(sk)`.
    #[raw_tracepoint(tracepoint = "tcp_receive_reset")]
    fn life_tcp_receive_reset, sb_life_tcp_receive_reset(ctx: RawTracePointContext) {
        model::run(&ctx, || life::rst_in(ctx.arg(0)))
    }
}

with_standby! {
    /// `net_dev_queue(skb)`: a packet is handed to a device (a FIN leaving, a UDP datagram).
    #[raw_tracepoint(tracepoint = "net_dev_queue")]
    fn life_net_dev_queue, sb_life_net_dev_queue(ctx: RawTracePointContext) {
        model::run(&ctx, || life::xmit::<Probe>(ctx.arg(0)))
    }
}

/// `task_rename(task, comm)`: a task's name changes, so the comm filter's remembered verdicts
/// and names are void. Attached in every mode; one run per rename, none per call.
#[raw_tracepoint(tracepoint = "task_rename")]
pub fn filter_task_rename(_ctx: RawTracePointContext) -> u32 {
    filter::renamed();
    0
}

/// `task_newtask(task, clone_flags)`: a new thread may have a dead one's id, with its
/// parent's name, and no rename: it voids them too. One run per thread made.
#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn filter_task_newtask(_ctx: RawTracePointContext) -> u32 {
    filter::renamed();
    0
}

// Kernels without `tcp_sendmsg_locked`: the send call opens at the syscall's entry instead,
// the raw `sys_enter(regs, id)`, one hook for every syscall, of which the program looks at the
// send syscalls only, before doing anything else. Raw rather than the `syscalls` tracepoints:
// those share one busy flag per CPU with every kprobe and classic tracepoint program, so where
// programs run preemptibly the kernel skips them for other threads, and no standby copy could
// run either.

with_standby! {
    /// `write`, `writev`, `sendto` and `sendmsg` open a call on a TCP socket.
    #[raw_tracepoint(tracepoint = "sys_enter")]
    fn entry_sys_enter, sb_entry_sys_enter(ctx: RawTracePointContext) if is_send(&ctx) => {
        send_syscall::<0>(&ctx)
    }
}

with_standby! {
    /// The same, on TCP sockets with a layer above TCP only (see `layer`), found before
    /// anything else is done.
    #[raw_tracepoint(tracepoint = "sys_enter")]
    fn layer_sys_enter, sb_layer_sys_enter(ctx: RawTracePointContext) if is_send(&ctx) => {
        match entry::layered_fd(syscall::arg(ctx.arg(0), 0)) {
            Ok(true) => send_syscall::<SEND_F_LAYERED>(&ctx),
            _ => 0,
        }
    }
}

#[inline(always)]
fn is_send(ctx: &RawTracePointContext) -> bool {
    matches!(
        ctx.arg::<u64>(1),
        NR_WRITE | NR_WRITEV | NR_SENDTO | NR_SENDMSG
    )
}

/// A send syscall opens a call, its event flagged `EXTRA` (`SEND_F_*`). A constant, not an
/// argument: a value captured by the closure would grow the program's own stack frame, and
/// 6.1's verifier rounds each frame of the call chain up to 32 bytes (at 512 in all).
#[inline(always)]
fn send_syscall<const EXTRA: u32>(ctx: &RawTracePointContext) -> u32 {
    let (regs, id): (u64, u64) = (ctx.arg(0), ctx.arg(1));
    let arg = |n| syscall::arg(regs, n);
    model::run(ctx, || match id {
        NR_WRITE => entry::send_begin_fd(arg(0), Some(arg(2)), 0, EXTRA),
        NR_WRITEV => entry::send_begin_fd(arg(0), entry::iov_requested(arg(1), arg(2)), 0, EXTRA),
        NR_SENDTO => entry::send_begin_fd(arg(0), Some(arg(2)), arg(3) as u32, EXTRA),
        _ => entry::send_begin_fd(
            arg(0),
            entry::msghdr_requested(arg(1)),
            arg(2) as u32,
            EXTRA,
        ),
    })
}

/// `sched_switch(preempt, prev, next, prev_state)` where there is no copy-loop tracepoint to
/// say the writer is back: the sleep as in `block_sched_switch`, and `next` waking from one.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn entry_sched_switch(ctx: RawTracePointContext) -> u32 {
    let next: u64 = ctx.arg(2);
    task_sleeps(&ctx);
    model::run(&ctx, || entry::task_wakes(next))
}

with_standby! {
    /// The raw `sys_exit(regs, ret)`, at every syscall's exit: once a kernel send was met in
    /// a `sendfile()`, `splice()` or `sendmmsg()`, such a call returns to the application.
    #[raw_tracepoint(tracepoint = "sys_exit")]
    fn calls_sys_exit, sb_calls_sys_exit(ctx: RawTracePointContext) if calls::any() => {
        let (regs, ret): (u64, u64) = (ctx.arg(0), ctx.arg(1));
        model::run(&ctx, || calls::raw_exit(regs, ret as i64))
    }
}

/// The classic `syscalls/sys_exit_{sendfile64,splice,sendmmsg,recvmmsg}(__syscall_nr, ret)`:
/// the same at those syscalls' exits alone, where the kernel never preempts a program (no
/// standby copies). Every other syscall passes no program (the raw `sys_exit` costs each of
/// them a run); a classic tracepoint is skipped while any kprobe or classic tracepoint
/// program runs on the CPU, which a syscall's exit in a task that cannot be preempted in one
/// never meets.
#[tracepoint]
pub fn calls_sys_exit_pieced(ctx: TracePointContext) -> u32 {
    // The record after its 8-byte common header: `int __syscall_nr`, then `long ret` at 16.
    let record = ctx.as_ptr() as *const u8;
    let (nr, ret) = unsafe {
        (
            core::ptr::read(record.add(8) as *const i32),
            core::ptr::read(record.add(16) as *const i64),
        )
    };
    model::run(&ctx, || calls::pieced_exit(nr as u32, ret))
}

/// The classic `syscalls/sys_enter_{sendfile64,splice,sendmmsg,recvmmsg}(__syscall_nr, …)`,
/// where their exits above are hooked: the thread is in such a call until its exit (see
/// `calls::PIECED_AT_ENTRY`).
#[tracepoint]
pub fn calls_sys_enter_pieced(ctx: TracePointContext) -> u32 {
    // The record after its 8-byte common header: `int __syscall_nr`.
    let nr = unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(8) as *const i32) };
    calls::enter(nr as u32);
    0
}
