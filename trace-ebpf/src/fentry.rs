//! fentry/fexit backend: BTF-typed function hooks, the cheapest where the kernel allows them.
//! Each program only pulls its hook's arguments and calls the model.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use crate::{
    kernel::{self, Sock},
    life, model, recv,
    standby::with_standby,
    udp,
};

with_standby! {
    /// `tcp_sendmsg(sk, msg, size)`: a send call starts.
    #[fentry(function = "tcp_sendmsg")]
    fn send_tcp_sendmsg_fentry, sb_send_tcp_sendmsg_fentry(ctx: FEntryContext) {
        model::run(&ctx, || model::send_begin(Sock::new(ctx.arg(0)), ctx.arg(1)))
    }
}

with_standby! {
    /// … and returns; fexit sees the arguments, then the return value.
    #[fexit(function = "tcp_sendmsg")]
    fn send_tcp_sendmsg_fexit, sb_send_tcp_sendmsg_fexit(ctx: FExitContext) {
        let (sk, ret): (u64, i64) = (ctx.arg(0), func_ret(&ctx));
        model::run(&ctx, || model::send_end(&ctx, Sock::new(sk), Some(sk), ret))
    }
}

/// The traced function's return value as an int. Asked of the kernel rather than read at a
/// fixed slot: argument lists change between kernels (7.x dropped recvmsg's `addr_len`), and
/// a program reading past them is refused.
#[inline(always)]
fn func_ret(ctx: &FExitContext) -> i64 {
    ctx.ret::<i32>().map_or(0, i64::from)
}

with_standby! {
    /// `sk_stream_wait_memory(sk, timeo_p)`: the sender waits for space, unless it must not
    /// (a non-blocking call has `*timeo_p == 0` and gets EAGAIN).
    #[fentry(function = "sk_stream_wait_memory")]
    fn block_sk_stream_wait_memory_fentry, sb_block_sk_stream_wait_memory_fentry(ctx: FEntryContext) {
        let timeo_p: u64 = ctx.arg(1);
        model::run(&ctx, || model::wait_for_memory(&ctx, timeo_p))
    }
}

with_standby! {
    #[fexit(function = "sk_stream_wait_memory")]
    fn block_sk_stream_wait_memory_fexit, sb_block_sk_stream_wait_memory_fexit(ctx: FExitContext) {
        model::run(&ctx, model::block_end)
    }
}

with_standby! {
    /// `tcp_rcv_established(sk, skb)`: each segment an established socket receives.
    #[fentry(function = "tcp_rcv_established")]
    fn ack_tcp_rcv_established_fentry, sb_ack_tcp_rcv_established_fentry(ctx: FEntryContext) {
        model::run(&ctx, || model::ack(Sock::new(ctx.arg(0)), ctx.arg(1)))
    }
}

with_standby! {
    /// `udp_sendmsg(sk, msg, len)` and its IPv6 twin return: one UDP send call.
    #[fexit(function = "udp_sendmsg")]
    fn udp_udp_sendmsg_fexit, sb_udp_udp_sendmsg_fexit(ctx: FExitContext) {
        udp_send_fexit(&ctx)
    }
}

with_standby! {
    #[fexit(function = "udpv6_sendmsg")]
    fn udp_udpv6_sendmsg_fexit, sb_udp_udpv6_sendmsg_fexit(ctx: FExitContext) {
        udp_send_fexit(&ctx)
    }
}

#[inline(always)]
fn udp_send_fexit(ctx: &FExitContext) -> u32 {
    let (sk, msg): (u64, u64) = (ctx.arg(0), ctx.arg(1));
    let ret = func_ret(ctx);
    model::run(ctx, || udp::send_done(sk, kernel::msg_flags(msg)?, ret))
}

with_standby! {
    /// `tcp_recvmsg(sk, msg, len, flags[, addr_len])` and the UDP ones return: one receive call.
    #[fexit(function = "tcp_recvmsg")]
    fn recv_tcp_recvmsg_fexit, sb_recv_tcp_recvmsg_fexit(ctx: FExitContext) {
        recv_fexit(&ctx)
    }
}

with_standby! {
    #[fexit(function = "udp_recvmsg")]
    fn recv_udp_recvmsg_fexit, sb_recv_udp_recvmsg_fexit(ctx: FExitContext) {
        recv_fexit(&ctx)
    }
}

with_standby! {
    #[fexit(function = "udpv6_recvmsg")]
    fn recv_udpv6_recvmsg_fexit, sb_recv_udpv6_recvmsg_fexit(ctx: FExitContext) {
        recv_fexit(&ctx)
    }
}

#[inline(always)]
fn recv_fexit(ctx: &FExitContext) -> u32 {
    let (sk, flags): (u64, i32) = (ctx.arg(0), ctx.arg(3));
    let ret = func_ret(ctx);
    model::run(ctx, || {
        recv::recv_end(Sock::new(sk), Some(sk), ret, flags as u32)
    })
}

with_standby! {
    /// `tcp_splice_read(sock, ppos, pipe, len, flags)` returns: a `splice()` from a TCP
    /// socket, which reads through `tcp_read_sock`, past `tcp_recvmsg`.
    #[fexit(function = "tcp_splice_read")]
    fn recv_tcp_splice_read_fexit, sb_recv_tcp_splice_read_fexit(ctx: FExitContext) {
        let socket: u64 = ctx.arg(0);
        let ret = func_ret(&ctx);
        model::run(&ctx, || {
            recv::recv_end(Sock::new(kernel::socket_sock(socket)?), None, ret, 0)
        })
    }
}

/// `tcp_timewait_state_process(tw, skb, th, …)`: a segment reaches a time-wait socket. No
/// standby copy: it runs in softirq, where no task is preempted inside it.
#[fentry(function = "tcp_timewait_state_process")]
pub fn life_tcp_timewait_state_process_fentry(ctx: FEntryContext) -> u32 {
    model::run(&ctx, || life::timewait_segment(ctx.arg(0), ctx.arg(2)))
}
