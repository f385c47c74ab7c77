//! BTF-typed tracepoint backend (`tp_btf`): the tracepoint backend's hooks, whose arguments
//! the verifier knows as typed kernel pointers. It loads where fentry is refused (this
//! machine's kernel) and needs no kprobe PMU. The bodies are the raw tracepoint programs'.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{kernel::Direct, life, model, standby::with_standby, tracepoint};

with_standby! {
    /// `tcp_sendmsg_locked(sk, msg, skb, size_goal)`: each pass of the TCP copy loop.
    #[btf_tracepoint(function = "tcp_sendmsg_locked")]
    fn send_tcp_sendmsg_locked_btf, sb_send_tcp_sendmsg_locked_btf(ctx: BtfTracePointContext) {
        tracepoint::tcp_sendmsg_locked(&ctx)
    }
}

with_standby! {
    /// `sock_send_length(sk, ret, flags)`: every sendmsg's return, any protocol.
    #[btf_tracepoint(function = "sock_send_length")]
    fn send_sock_send_length_btf, sb_send_sock_send_length_btf(ctx: BtfTracePointContext) {
        tracepoint::sock_send_length::<_, false>(&ctx)
    }
}

with_standby! {
    /// `tcp_probe(sk, skb)`: each segment `tcp_rcv_established` receives.
    #[btf_tracepoint(function = "tcp_probe")]
    fn ack_tcp_probe_btf, sb_ack_tcp_probe_btf(ctx: BtfTracePointContext) {
        tracepoint::tcp_probe(&ctx)
    }
}

with_standby! {
    /// `sock_recv_length(sk, ret, flags)`: every recvmsg's return, any protocol.
    #[btf_tracepoint(function = "sock_recv_length")]
    fn recv_sock_recv_length_btf, sb_recv_sock_recv_length_btf(ctx: BtfTracePointContext) {
        tracepoint::sock_recv_length(&ctx)
    }
}

with_standby! {
    /// `net_dev_queue(skb)`: a packet is handed to a device, its fields read by loads.
    #[btf_tracepoint(function = "net_dev_queue")]
    fn life_net_dev_queue_btf, sb_life_net_dev_queue_btf(ctx: BtfTracePointContext) {
        model::run(&ctx, || life::xmit::<Direct>(ctx.arg(0)))
    }
}

with_standby! {
    /// `inet_sock_set_state(sk, oldstate, newstate)`, typed: a socket's CLOSE adds the
    /// counts it keeps (`sk_counts`) to the summary's.
    #[btf_tracepoint(function = "inet_sock_set_state")]
    fn life_inet_sock_set_state_btf, sb_life_inet_sock_set_state_btf(ctx: BtfTracePointContext) {
        let (sk, old, new): (u64, u64, u64) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
        model::run(&ctx, || life::state(sk, Some(sk), old as u32, new as u32))
    }
}
