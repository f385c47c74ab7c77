//! kprobe/kretprobe backend: for kernels that refuse fentry. Same hooks as fentry; the return
//! probe does not see the arguments, so the model recalls the call's socket.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::model;

#[kprobe]
pub fn send_tcp_sendmsg_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(sk), Some(msg)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    model::run(&ctx, || model::send_begin(sk, msg))
}

#[kretprobe]
pub fn send_tcp_sendmsg_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    model::run(&ctx, || model::send_return(i64::from(ret)))
}

#[kprobe]
pub fn block_sk_stream_wait_memory_kprobe(ctx: ProbeContext) -> u32 {
    let Some(timeo_p) = ctx.arg::<u64>(1) else {
        return 0;
    };
    model::run(&ctx, || model::wait_for_memory(timeo_p))
}

#[kretprobe]
pub fn block_sk_stream_wait_memory_kretprobe(ctx: RetProbeContext) -> u32 {
    model::run(&ctx, model::block_end)
}

#[kprobe]
pub fn ack_tcp_rcv_established_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(sk), Some(skb)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    model::run(&ctx, || model::ack(sk, skb))
}
