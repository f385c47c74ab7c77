//! fentry/fexit backend: BTF-typed function hooks, the cheapest where the kernel allows them.
//! Each program only pulls its hook's arguments and calls the model.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use crate::model;

/// `tcp_sendmsg(sk, msg, size)`: a send call starts.
#[fentry(function = "tcp_sendmsg")]
pub fn send_tcp_sendmsg_fentry(ctx: FEntryContext) -> u32 {
    model::run(&ctx, || model::send_begin(ctx.arg(0), ctx.arg(1)))
}

/// … and returns; fexit sees the arguments, then the return value.
#[fexit(function = "tcp_sendmsg")]
pub fn send_tcp_sendmsg_fexit(ctx: FExitContext) -> u32 {
    let ret: i32 = ctx.arg(3);
    model::run(&ctx, || model::send_end(ctx.arg(0), i64::from(ret)))
}

/// `sk_stream_wait_memory(sk, timeo_p)`: the sender waits for space, unless it must not
/// (a non-blocking call has `*timeo_p == 0` and gets EAGAIN).
#[fentry(function = "sk_stream_wait_memory")]
pub fn block_sk_stream_wait_memory_fentry(ctx: FEntryContext) -> u32 {
    let timeo_p: u64 = ctx.arg(1);
    model::run(&ctx, || model::wait_for_memory(timeo_p))
}

#[fexit(function = "sk_stream_wait_memory")]
pub fn block_sk_stream_wait_memory_fexit(ctx: FExitContext) -> u32 {
    model::run(&ctx, model::block_end)
}

/// `tcp_rcv_established(sk, skb)`: each segment an established socket receives.
#[fentry(function = "tcp_rcv_established")]
pub fn ack_tcp_rcv_established_fentry(ctx: FEntryContext) -> u32 {
    model::run(&ctx, || model::ack(ctx.arg(0), ctx.arg(1)))
}
