//! Reads of kernel structs at offsets the loader found in the running kernel's BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use trace_common::{KernelOffsets, SendQueue, SockAddrs};

/// Set by the loader before load. Read field by field with volatile reads (see [`off!`]): a
/// plain read would be folded to the zeros below, and copying the whole struct costs stack.
#[unsafe(no_mangle)]
static KOFFSETS: KernelOffsets = KernelOffsets {
    sk_family: 0,
    sk_num: 0,
    sk_dport: 0,
    sk_rcv_saddr: 0,
    sk_daddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_v6_daddr: 0,
    sk_protocol: 0,
    sk_type: 0,
    sk_sndbuf: 0,
    sk_wmem_queued: 0,
    sk_socket: 0,
    tp_write_seq: 0,
    tp_snd_una: 0,
    tp_snd_nxt: 0,
    tp_bytes_acked: 0,
    socket_alloc_inode: 0,
    inode_ino: 0,
    msg_iter_count: 0,
    msg_flags: 0,
    skb_cb: 0,
    tcb_ack_seq: 0,
    tcb_tcp_flags: 0,
};

/// The offset of one kernel field, as the loader set it.
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const KOFFSETS.$field) }
    };
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const SOCK_STREAM: u16 = 1;

/// Why a program gave up on an event; logged through aya-log by the program's wrapper.
#[derive(Clone, Copy)]
pub enum Fault {
    /// A kernel read failed at this offset.
    Read(u32),
    /// The in-progress-call map is full.
    InflightFull,
    /// The socket map refused an entry.
    SocksFull,
}

/// Reads a `T` at `base + off`.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Result<T, Fault> {
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }
        .map_err(|_| Fault::Read(off))
}

/// A `struct sock *` (for TCP, also a `struct tcp_sock *`).
pub struct Sock {
    pub ptr: u64,
}

impl Sock {
    #[inline(always)]
    pub fn new(ptr: u64) -> Self {
        Self { ptr }
    }

    #[inline(always)]
    pub fn family(&self) -> Result<u16, Fault> {
        read(self.ptr, off!(sk_family))
    }

    /// IPv4 or IPv6 TCP stream socket: the only kind the send path traces.
    #[inline(always)]
    pub fn is_tcp(&self) -> Result<bool, Fault> {
        let family = self.family()?;
        Ok((family == AF_INET || family == AF_INET6)
            && read::<u16>(self.ptr, off!(sk_protocol))? == IPPROTO_TCP
            && read::<u16>(self.ptr, off!(sk_type))? == SOCK_STREAM)
    }

    #[inline(always)]
    pub fn lport(&self) -> Result<u16, Fault> {
        read(self.ptr, off!(sk_num))
    }

    #[inline(always)]
    pub fn rport(&self) -> Result<u16, Fault> {
        read(self.ptr, off!(sk_dport)).map(u16::from_be)
    }

    #[inline(always)]
    pub fn addrs(&self) -> Result<SockAddrs, Fault> {
        let family = self.family()?;
        let mut a = SockAddrs {
            family,
            lport: self.lport()?,
            rport: self.rport()?,
            ..Default::default()
        };
        if family == AF_INET6 {
            a.saddr = read(self.ptr, off!(sk_v6_rcv_saddr))?;
            a.daddr = read(self.ptr, off!(sk_v6_daddr))?;
        } else {
            let s: [u8; 4] = read(self.ptr, off!(sk_rcv_saddr))?;
            let d: [u8; 4] = read(self.ptr, off!(sk_daddr))?;
            a.saddr[..4].copy_from_slice(&s);
            a.daddr[..4].copy_from_slice(&d);
        }
        Ok(a)
    }

    /// The socket's inode number (0 once the socket has no `struct socket`, e.g. orphaned).
    #[inline(always)]
    pub fn ino(&self) -> Result<u64, Fault> {
        let socket: u64 = read(self.ptr, off!(sk_socket))?;
        if socket == 0 {
            return Ok(0);
        }
        read(socket, off!(socket_alloc_inode) + off!(inode_ino))
    }

    #[inline(always)]
    pub fn snd_una(&self) -> Result<u32, Fault> {
        read(self.ptr, off!(tp_snd_una))
    }

    #[inline(always)]
    pub fn snd_nxt(&self) -> Result<u32, Fault> {
        read(self.ptr, off!(tp_snd_nxt))
    }

    #[inline(always)]
    pub fn bytes_acked(&self) -> Result<u64, Fault> {
        read(self.ptr, off!(tp_bytes_acked))
    }

    /// The send side now. Sequence arithmetic wraps, as the kernel's does.
    #[inline(always)]
    pub fn send_queue(&self) -> Result<SendQueue, Fault> {
        let write_seq: u32 = read(self.ptr, off!(tp_write_seq))?;
        let snd_una = self.snd_una()?;
        let snd_nxt = self.snd_nxt()?;
        Ok(SendQueue {
            sndbuf: read(self.ptr, off!(sk_sndbuf))?,
            wmem_queued: read(self.ptr, off!(sk_wmem_queued))?,
            send_q: write_seq.wrapping_sub(snd_una),
            unsent: write_seq.wrapping_sub(snd_nxt),
            in_flight: snd_nxt.wrapping_sub(snd_una),
            _pad: 0,
            acked: self.bytes_acked()?,
        })
    }
}

/// What a `struct msghdr *` tells about a send call: bytes left to copy and the call's flags.
#[inline(always)]
pub fn msg_left(msg: u64) -> Result<u64, Fault> {
    read(msg, off!(msg_iter_count))
}

#[inline(always)]
pub fn msg_flags(msg: u64) -> Result<u32, Fault> {
    read(msg, off!(msg_flags))
}

/// An incoming segment's ACK number, when its ACK flag is set, from `TCP_SKB_CB(skb)` as
/// `tcp_ack()` reads it. Not from the TCP header: when the socket is owned by a sender,
/// `tcp_add_backlog()` coalesces ACKs into the backlog's tail and updates only the cb.
#[inline(always)]
pub fn skb_ack_seq(skb: u64) -> Result<Option<u32>, Fault> {
    const TCPHDR_ACK: u8 = 0x10;
    // tcp_flags is u8 or u16 depending on the kernel; its low byte holds ACK either way.
    if read::<u8>(skb, off!(skb_cb) + off!(tcb_tcp_flags))? & TCPHDR_ACK == 0 {
        return Ok(None);
    }
    read(skb, off!(skb_cb) + off!(tcb_ack_seq)).map(Some)
}
