//! Tracepoint backend: raw tracepoints, which this kernel has even without kprobes or fentry.
//! Each program only pulls its hook's arguments and calls the model.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::model;

/// `tcp_sendmsg_locked(sk, msg, skb, size_goal)`: each pass of the TCP copy loop.
#[raw_tracepoint(tracepoint = "tcp_sendmsg_locked")]
pub fn send_tcp_sendmsg_locked(ctx: RawTracePointContext) -> u32 {
    model::run(&ctx, || model::send_begin(ctx.arg(0), ctx.arg(1)))
}

/// `sock_send_length(sk, ret, flags)`: every sendmsg's return, any protocol.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn send_sock_send_length(ctx: RawTracePointContext) -> u32 {
    let ret: u64 = ctx.arg(1);
    model::run(&ctx, || model::send_end(ctx.arg(0), i64::from(ret as i32)))
}

/// `sched_switch(preempt, prev, next, prev_state)`: runs as `prev`, just before it sleeps.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn block_sched_switch(ctx: RawTracePointContext) -> u32 {
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
    model::run(&ctx, model::block_begin)
}

/// `tcp_probe(sk, skb)`: each segment `tcp_rcv_established` receives, before processing.
#[raw_tracepoint(tracepoint = "tcp_probe")]
pub fn ack_tcp_probe(ctx: RawTracePointContext) -> u32 {
    model::run(&ctx, || model::ack(ctx.arg(0), ctx.arg(1)))
}
