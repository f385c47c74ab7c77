//! kprobe/kretprobe backend: for kernels that refuse fentry. Same hooks as fentry; the return
//! probe does not see the arguments, so the model recalls the call's socket.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    kernel::{self, Sock},
    life, model, recv, udp,
};

#[kprobe]
pub fn send_tcp_sendmsg_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(sk), Some(msg)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    model::run(&ctx, || model::send_begin(Sock::new(sk), msg))
}

#[kretprobe]
pub fn send_tcp_sendmsg_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    model::run(&ctx, || model::send_return(&ctx, i64::from(ret)))
}

#[kprobe]
pub fn block_sk_stream_wait_memory_kprobe(ctx: ProbeContext) -> u32 {
    let Some(timeo_p) = ctx.arg::<u64>(1) else {
        return 0;
    };
    model::run(&ctx, || model::wait_for_memory(&ctx, timeo_p))
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
    model::run(&ctx, || model::ack(Sock::new(sk), skb))
}

#[kprobe]
pub fn udp_udp_sendmsg_kprobe(ctx: ProbeContext) -> u32 {
    udp_send_kprobe(&ctx)
}

#[kprobe]
pub fn udp_udpv6_sendmsg_kprobe(ctx: ProbeContext) -> u32 {
    udp_send_kprobe(&ctx)
}

#[inline(always)]
fn udp_send_kprobe(ctx: &ProbeContext) -> u32 {
    let (Some(sk), Some(msg)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    model::run(ctx, || udp::send_enter(sk, msg))
}

/// One return probe for both UDP send functions.
#[kretprobe]
pub fn udp_sendmsg_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    model::run(&ctx, || udp::send_return(i64::from(ret)))
}

/// `tcp_recvmsg`, `udp_recvmsg`, `udpv6_recvmsg` (sk, msg, len, flags, addr_len): one entry
/// program and one return program, each attached to all three.
#[kprobe]
pub fn recv_recvmsg_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(sk), Some(flags)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(3)) else {
        return 0;
    };
    model::run(&ctx, || recv::recv_enter(sk, flags as u32))
}

/// `tcp_splice_read(sock, ppos, pipe, len, flags)`: a `splice()` from a TCP socket (it reads
/// past `tcp_recvmsg`); `recv_recvmsg_kretprobe` is attached to its return too.
#[kprobe]
pub fn recv_tcp_splice_read_kprobe(ctx: ProbeContext) -> u32 {
    let Some(socket) = ctx.arg::<u64>(0) else {
        return 0;
    };
    model::run(&ctx, || recv::recv_enter(kernel::socket_sock(socket)?, 0))
}

#[kretprobe]
pub fn recv_recvmsg_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    model::run(&ctx, || recv::recv_return(i64::from(ret)))
}

/// `tcp_timewait_state_process(tw, skb, th, …)`: a segment reaches a time-wait socket.
#[kprobe]
pub fn life_tcp_timewait_state_process_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(tw), Some(th)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(2)) else {
        return 0;
    };
    model::run(&ctx, || life::timewait_segment(tw, th))
}
