//! Reads of kernel structs at offsets the loader found in the running kernel's BTF.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_probe_read_kernel, generated, generated::bpf_skc_to_tcp_sock},
};
use trace_common::{KernelOffsets, RecvQueue, SendQueue, SockAddrs};

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
    tcb_end_seq: 0,
    sk_state: 0,
    sk_rcvbuf: 0,
    sk_rmem_alloc: 0,
    sk_wmem_alloc: 0,
    tp_rcv_nxt: 0,
    tp_copied_seq: 0,
    tp_bytes_received: 0,
    up_pending: 0,
    up_len: 0,
    skb_sk: 0,
    skb_head: 0,
    skb_transport_header: 0,
    inet_sport: 0,
    task_files: 0,
    task_pid: 0,
    task_tgid: 0,
    task_comm: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    file_inode: 0,
    file_flags: 0,
    inode_mode: 0,
    socket_sk: 0,
    task_stack: 0,
    sk_flags: 0,
    task_flags: 0,
    sk_prot: 0,
    proto_sendmsg: 0,
    socket_file: 0,
    sk_net: 0,
    net_inum: 0,
};

/// The offset of one kernel field, as the loader set it.
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const KOFFSETS.$field) }
    };
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;
const SOCK_STREAM: u16 = 1;
const SOCK_DGRAM: u16 = 2;

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

/// Reads fields that the kernel updates together until two passes agree. An ACK moves
/// `bytes_acked` and `snd_una`, a segment `bytes_received` and `rcv_nxt`, in softirq on this
/// CPU (between two of a program's reads) or on another CPU: a sum of fields read across
/// that update is off by the whole ACK (seen on 7.3 as a write's end 47 kB too far).
#[inline(always)]
fn settled<T: PartialEq + Copy>(mut f: impl FnMut() -> Result<T, Fault>) -> Result<T, Fault> {
    let mut prev = f()?;
    for _ in 0..3 {
        let next = f()?;
        if next == prev {
            break;
        }
        prev = next;
    }
    Ok(prev)
}

/// How a socket's fields are read: [`Probe`] (a helper call per read, from any hook) or
/// [`Direct`] (loads the verifier checks against the kernel's BTF, from hooks whose socket
/// argument is a typed pointer).
pub trait Access: Copy {
    /// A `T` at `off` in socket `ptr`, a `struct sock` and for TCP a `struct tcp_sock`.
    fn get<T>(self, ptr: u64, off: u32) -> Result<T, Fault>;

    /// The syscall the current task is in (see `syscall::current_nr`).
    #[inline(always)]
    fn syscall_nr() -> Result<Option<u32>, Fault> {
        crate::syscall::current_nr()
    }

    /// A `T` at `off` in a struct the hook passed (an `skb`), or one a load from it gave.
    #[inline(always)]
    fn load<T>(ptr: u64, off: u32) -> Result<T, Fault> {
        read(ptr, off)
    }

    /// The inode number of `socket`, a `struct socket *` read from a socket.
    #[inline(always)]
    fn socket_ino(socket: u64) -> Result<u64, Fault> {
        read(socket, off!(socket_alloc_inode) + off!(inode_ino))
    }

    /// Bytes a send call's `msghdr` still asks for, and its flags, at the hook that passed
    /// `msg` with the socket.
    #[inline(always)]
    fn msg_left_flags(msg: u64) -> Result<(u64, u32), Fault> {
        Ok((msg_left(msg)?, msg_flags(msg)?))
    }
}

/// `bpf_probe_read_kernel`, about 20 ns each.
#[derive(Clone, Copy)]
pub struct Probe;

impl Access for Probe {
    #[inline(always)]
    fn get<T>(self, ptr: u64, off: u32) -> Result<T, Fault> {
        read(ptr, off)
    }
}

/// The socket as a typed `struct tcp_sock *`, never null. A load at a constant offset (the
/// loader's offsets sit in frozen read-only data, so the verifier knows each) of a typed
/// pointer is one instruction, its fault handled by the kernel, where a probe read is a
/// helper call. No fallback inside: a branch per read doubled the paths the verifier walks
/// at each read (half a minute to load under emulation); a socket that is not TCP takes the
/// [`Probe`] model instead, chosen once per event.
#[derive(Clone, Copy)]
pub struct Direct {
    tp: u64,
}

impl Access for Direct {
    #[inline(always)]
    fn get<T>(self, _ptr: u64, off: u32) -> Result<T, Fault> {
        Ok(unsafe { core::ptr::read_volatile((self.tp + u64::from(off)) as *const T) })
    }

    /// The hook's other arguments are typed too (`tcp_probe`'s and `net_dev_queue`'s
    /// `skb`), and so is a struct pointer loaded from one (`skb->sk`). An skb's `cb` is an
    /// array of bytes, which the verifier lets a load read at any offset.
    #[inline(always)]
    fn load<T>(ptr: u64, off: u32) -> Result<T, Fault> {
        Ok(unsafe { core::ptr::read_volatile((ptr + u64::from(off)) as *const T) })
    }

    /// `socket->file->f_inode->i_ino`: three loads where the inode beside the socket (outside
    /// `struct socket`, which the verifier checks loads against) takes a probe read. A socket
    /// without a file (a kernel socket's) is read as the other backends read it.
    #[inline(always)]
    fn socket_ino(socket: u64) -> Result<u64, Fault> {
        use core::ptr::read_volatile;
        let (file_at, inode_at, ino_at) = (off!(socket_file), off!(file_inode), off!(inode_ino));
        let file = unsafe { read_volatile((socket + u64::from(file_at)) as *const u64) };
        if file == 0 {
            return read(socket, off!(socket_alloc_inode) + ino_at);
        }
        let inode = unsafe { read_volatile((file + u64::from(inode_at)) as *const u64) };
        Ok(unsafe { read_volatile((inode + u64::from(ino_at)) as *const u64) })
    }

    /// The hook's `msg` is typed too (`tcp_sendmsg_locked`'s).
    #[inline(always)]
    fn msg_left_flags(msg: u64) -> Result<(u64, u32), Fault> {
        use core::ptr::read_volatile;
        let left = msg + u64::from(off!(msg_iter_count));
        let flags = msg + u64::from(off!(msg_flags));
        Ok(unsafe {
            (
                read_volatile(left as *const u64),
                read_volatile(flags as *const u32),
            )
        })
    }

    /// Only BTF-typed programs make a `Direct`, and they may ask for the task and its user
    /// registers as typed pointers: four loads where the stack walk made four probe reads
    /// (a tenth of a streamed send's time).
    #[inline(always)]
    fn syscall_nr() -> Result<Option<u32>, Fault> {
        use core::ptr::read_volatile;

        use crate::syscall::{ORIG_AX, PF_IO_WORKER, USER_CS};
        let task = unsafe { generated::bpf_get_current_task_btf() };
        let at = task as u64 + u64::from(off!(task_flags));
        let flags = unsafe { read_volatile(at as *const u32) };
        if flags & PF_IO_WORKER != 0 {
            return Ok(None);
        }
        let regs = unsafe { generated::bpf_task_pt_regs(task) } as u64;
        // cs at 136: a 64-bit task's user registers (else a kernel thread's zeros).
        if unsafe { read_volatile((regs + 136) as *const u64) } != USER_CS {
            return Ok(None);
        }
        Ok(Some(
            unsafe { read_volatile((regs + u64::from(ORIG_AX)) as *const u64) } as u32,
        ))
    }
}

/// A `struct sock *` (for TCP, also a `struct tcp_sock *`), and how its fields are read.
#[derive(Clone, Copy)]
pub struct Sock<A: Access = Probe> {
    pub ptr: u64,
    access: A,
}

impl Sock<Probe> {
    #[inline(always)]
    pub fn new(ptr: u64) -> Self {
        Self { ptr, access: Probe }
    }
}

impl Sock<Direct> {
    /// `ptr` must be a typed pointer in the verifier's eyes (a BTF-typed hook's argument);
    /// `None` unless it is a TCP socket.
    #[inline(always)]
    pub fn typed(ptr: u64) -> Option<Self> {
        let tp = unsafe { bpf_skc_to_tcp_sock(ptr as *mut c_void) } as u64;
        (tp != 0).then_some(Self {
            ptr,
            access: Direct { tp },
        })
    }
}

impl<A: Access> Sock<A> {
    /// A field of the socket: see [`Access`].
    #[inline(always)]
    fn get<T>(&self, off: u32) -> Result<T, Fault> {
        self.access.get(self.ptr, off)
    }

    #[inline(always)]
    pub fn family(&self) -> Result<u16, Fault> {
        self.get(off!(sk_family))
    }

    /// `IPPROTO_TCP` for an IPv4/IPv6 TCP stream socket, `IPPROTO_UDP` for a UDP datagram
    /// socket, 0 for anything else (sockbuf traces only these two).
    #[inline(always)]
    pub fn protocol(&self) -> Result<u16, Fault> {
        let family = self.family()?;
        if family != AF_INET && family != AF_INET6 {
            return Ok(0);
        }
        let proto: u16 = self.get(off!(sk_protocol))?;
        let kind: u16 = self.get(off!(sk_type))?;
        Ok(match (proto, kind) {
            (IPPROTO_TCP, SOCK_STREAM) | (IPPROTO_UDP, SOCK_DGRAM) => proto,
            _ => 0,
        })
    }

    /// The inode number of the socket's network namespace (`sk_net`'s `ns.inum`).
    #[inline(always)]
    pub fn netns(&self) -> Result<u32, Fault> {
        let net: u64 = self.get(off!(sk_net))?;
        read(net, off!(net_inum))
    }

    /// `sk_state`, from `sock_common`: safe to read on time-wait and request sockets too.
    #[inline(always)]
    pub fn state(&self) -> Result<u8, Fault> {
        self.get(off!(sk_state))
    }

    /// Whether the peer's FIN was received: `SOCK_DONE`, which only `tcp_fin()` sets
    /// (`RCV_SHUTDOWN` is set by the application's `close()` and `shutdown(SHUT_RD)` too).
    #[inline(always)]
    pub fn fin_received(&self) -> Result<bool, Fault> {
        // enum sock_flags: SOCK_DEAD, SOCK_DONE, …; the low byte holds it (little endian).
        const SOCK_DONE: u8 = 1 << 1;
        Ok(self.get::<u8>(off!(sk_flags))? & SOCK_DONE != 0)
    }

    #[inline(always)]
    pub fn sndbuf(&self) -> Result<u32, Fault> {
        self.get(off!(sk_sndbuf))
    }

    /// `sk_wmem_alloc` less the reference the socket holds on itself: what SIOCOUTQ
    /// reports for UDP (`sk_wmem_alloc_get`).
    #[inline(always)]
    pub fn wmem_alloc(&self) -> Result<u32, Fault> {
        self.get::<u32>(off!(sk_wmem_alloc))
            .map(|w| w.saturating_sub(1))
    }

    /// UDP corking: `udp_sock.pending`, and the payload bytes held for one datagram
    /// (`udp_sock.len` counts the 8-byte UDP header too).
    #[inline(always)]
    pub fn udp_cork(&self) -> Result<(u32, u32), Fault> {
        // Probe reads: a typed socket is a `tcp_sock` to the verifier, which holds other
        // fields there.
        let pending: u32 = read(self.ptr, off!(up_pending))?;
        let len: u16 = read(self.ptr, off!(up_len))?;
        Ok((pending, u32::from(len).saturating_sub(8)))
    }

    /// The receive side now; the sequence figures only for TCP.
    #[inline(always)]
    pub fn recv_queue(&self, tcp: bool) -> Result<RecvQueue, Fault> {
        let mut q = RecvQueue {
            rcvbuf: self.get(off!(sk_rcvbuf))?,
            rmem_alloc: self.get(off!(sk_rmem_alloc))?,
            ..Default::default()
        };
        if tcp {
            let (received, rcv_nxt, copied) = settled(|| {
                Ok((
                    self.get::<u64>(off!(tp_bytes_received))?,
                    self.rcv_nxt()?,
                    self.get::<u32>(off!(tp_copied_seq))?,
                ))
            })?;
            q.recv_q = rcv_nxt.wrapping_sub(copied);
            q.received = received;
        }
        Ok(q)
    }

    #[inline(always)]
    pub fn rcv_nxt(&self) -> Result<u32, Fault> {
        self.get(off!(tp_rcv_nxt))
    }

    /// Local port. `skc_num` is zeroed when a closing socket gives its port back, before
    /// the CLOSE state change is traced; `inet_sport`, the port its segments carry, stays.
    #[inline(always)]
    pub fn lport(&self) -> Result<u16, Fault> {
        match self.get::<u16>(off!(sk_num))? {
            0 => self.get(off!(inet_sport)).map(u16::from_be),
            p => Ok(p),
        }
    }

    #[inline(always)]
    pub fn rport(&self) -> Result<u16, Fault> {
        self.get(off!(sk_dport)).map(u16::from_be)
    }

    #[inline(always)]
    pub fn addrs(&self) -> Result<SockAddrs, Fault> {
        let mut a = SockAddrs::default();
        self.read_addrs(&mut a)?;
        Ok(a)
    }

    /// Reads the addresses into `a` in place (a map value: no copy on the stack).
    #[inline(always)]
    pub fn read_addrs(&self, a: &mut SockAddrs) -> Result<(), Fault> {
        let family = self.family()?;
        a.family = family;
        a.lport = self.lport()?;
        a.rport = self.rport()?;
        a._pad = 0;
        if family == AF_INET6 {
            a.saddr = self.get(off!(sk_v6_rcv_saddr))?;
            a.daddr = self.get(off!(sk_v6_daddr))?;
        } else {
            let s: [u8; 4] = self.get(off!(sk_rcv_saddr))?;
            let d: [u8; 4] = self.get(off!(sk_daddr))?;
            a.saddr = [0; 16];
            a.daddr = [0; 16];
            a.saddr[..4].copy_from_slice(&s);
            a.daddr[..4].copy_from_slice(&d);
        }
        Ok(())
    }

    /// The socket's inode number (0 once the socket has no `struct socket`, e.g. orphaned).
    #[inline(always)]
    pub fn ino(&self) -> Result<u64, Fault> {
        let socket: u64 = self.get(off!(sk_socket))?;
        if socket == 0 {
            return Ok(0);
        }
        A::socket_ino(socket)
    }

    /// The socket's `sk_prot->sendmsg`: `tcp_sendmsg` unless a layer (kTLS) took it over.
    #[inline(always)]
    pub fn sendmsg_fn(&self) -> Result<u64, Fault> {
        let prot: u64 = self.get(off!(sk_prot))?;
        read(prot, off!(proto_sendmsg))
    }

    #[inline(always)]
    pub fn write_seq(&self) -> Result<u32, Fault> {
        self.get(off!(tp_write_seq))
    }

    #[inline(always)]
    pub fn snd_una(&self) -> Result<u32, Fault> {
        self.get(off!(tp_snd_una))
    }

    #[inline(always)]
    pub fn snd_nxt(&self) -> Result<u32, Fault> {
        self.get(off!(tp_snd_nxt))
    }

    #[inline(always)]
    pub fn bytes_acked(&self) -> Result<u64, Fault> {
        self.get(off!(tp_bytes_acked))
    }

    /// The send side now. Sequence arithmetic wraps, as the kernel's does.
    #[inline(always)]
    pub fn send_queue(&self) -> Result<SendQueue, Fault> {
        // An ACK moves the first two together; write_seq only moves under the socket lock,
        // and snd_nxt is not added to them.
        let (acked, snd_una) = settled(|| Ok((self.bytes_acked()?, self.snd_una()?)))?;
        let write_seq = self.write_seq()?;
        let snd_nxt = self.snd_nxt()?;
        Ok(SendQueue {
            sndbuf: self.sndbuf()?,
            wmem_queued: self.get(off!(sk_wmem_queued))?,
            send_q: write_seq.wrapping_sub(snd_una),
            unsent: write_seq.wrapping_sub(snd_nxt),
            in_flight: snd_nxt.wrapping_sub(snd_una),
            _pad: 0,
            acked,
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

/// An incoming segment's ACK number, when it carries one TCP takes (ACK set, RST and SYN
/// not), from `TCP_SKB_CB(skb)` as `tcp_ack()` reads it. Not from the TCP header: when the socket is owned by a sender,
/// `tcp_add_backlog()` coalesces ACKs into the backlog's tail and updates only the cb.
#[inline(always)]
pub fn skb_ack_seq<A: Access>(skb: u64) -> Result<Option<u32>, Fault> {
    const TCPHDR_SYN: u8 = 0x02;
    const TCPHDR_RST: u8 = 0x04;
    const TCPHDR_ACK: u8 = 0x10;
    // tcp_flags is u8 or u16 depending on the kernel; its low byte holds these either way.
    // A RST's acknowledgment number is never taken (the reset is handled first: a peer that
    // closed with bytes unread acks what it threw away), nor a SYN's on an established
    // socket.
    let flags = A::load::<u8>(skb, off!(skb_cb) + off!(tcb_tcp_flags))?;
    if flags & (TCPHDR_ACK | TCPHDR_RST | TCPHDR_SYN) != TCPHDR_ACK {
        return Ok(None);
    }
    A::load(skb, off!(skb_cb) + off!(tcb_ack_seq)).map(Some)
}

const TCPHDR_FIN: u8 = 0x01;

/// An incoming segment's FIN, from `TCP_SKB_CB(skb)`: `Some(end_seq - 1)`, the FIN's own
/// sequence number, when the flag is set.
#[inline(always)]
pub fn skb_fin_seq<A: Access>(skb: u64) -> Result<Option<u32>, Fault> {
    if A::load::<u8>(skb, off!(skb_cb) + off!(tcb_tcp_flags))? & TCPHDR_FIN == 0 {
        return Ok(None);
    }
    A::load::<u32>(skb, off!(skb_cb) + off!(tcb_end_seq)).map(|end| Some(end.wrapping_sub(1)))
}

/// The socket an outgoing `skb` belongs to (0 for none).
#[inline(always)]
pub fn skb_sock<A: Access>(skb: u64) -> Result<u64, Fault> {
    A::load(skb, off!(skb_sk))
}

/// `sk_protocol` of `sk`, an outgoing skb's socket, as it reads: no check that `sk` is a
/// full `struct sock` (see `life::xmit`).
#[inline(always)]
pub fn skb_sock_protocol<A: Access>(sk: u64) -> Result<u16, Fault> {
    A::load(sk, off!(sk_protocol))
}

/// The start of an outgoing `skb`'s transport header.
#[inline(always)]
pub fn skb_transport<A: Access>(skb: u64) -> Result<u64, Fault> {
    let head: u64 = A::load(skb, off!(skb_head))?;
    let th: u16 = A::load(skb, off!(skb_transport_header))?;
    Ok(head + u64::from(th))
}

/// Whether an outgoing TCP header has FIN set (byte 13 holds the flags).
#[inline(always)]
pub fn tcph_fin(th: u64) -> Result<bool, Fault> {
    Ok(read::<u8>(th, 13)? & TCPHDR_FIN != 0)
}

/// An outgoing UDP datagram's payload length, from its header's length field.
#[inline(always)]
pub fn udph_payload(th: u64) -> Result<u32, Fault> {
    let len: u16 = read(th, 4)?;
    Ok(u32::from(u16::from_be(len)).saturating_sub(8))
}

/// The socket behind file descriptor `fd` of the current task, and whether its file is
/// non-blocking; `None` when `fd` is not a socket.
#[inline(always)]
pub fn fd_sock(fd: u64) -> Result<Option<(u64, bool)>, Fault> {
    const S_IFMT: u16 = 0o170000;
    const S_IFSOCK: u16 = 0o140000;
    const O_NONBLOCK: u32 = 0o4000;
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let files: u64 = read(task, off!(task_files))?;
    let fdt: u64 = read(files, off!(files_fdt))?;
    let max: u32 = read(fdt, off!(fdt_max_fds))?;
    if fd >= u64::from(max) {
        return Ok(None);
    }
    let fds: u64 = read(fdt, off!(fdt_fd))?;
    let file: u64 = read(fds + fd * 8, 0)?;
    if file == 0 {
        return Ok(None);
    }
    let inode: u64 = read(file, off!(file_inode))?;
    if read::<u16>(inode, off!(inode_mode))? & S_IFMT != S_IFSOCK {
        return Ok(None);
    }
    let socket: u64 = read(file, off!(file_private_data))?;
    let flags: u32 = read(file, off!(file_flags))?;
    Ok(Some((socket_sock(socket)?, flags & O_NONBLOCK != 0)))
}

/// The `struct sock` of a `struct socket`.
#[inline(always)]
pub fn socket_sock(socket: u64) -> Result<u64, Fault> {
    read(socket, off!(socket_sk))
}

/// x86_64's and arm64's kernel stacks (16 KiB; twice that with KASAN, not supported).
const THREAD_SIZE: u64 = 16 << 10;

/// Task `task`'s `PF_*` flags.
#[inline(always)]
pub fn task_flags(task: u64) -> Result<u32, Fault> {
    read(task, off!(task_flags))
}

/// Task `task`'s kernel stack: (lowest address, size).
#[inline(always)]
pub fn task_stack(task: u64) -> Option<(u64, u64)> {
    Some((read(task, off!(task_stack)).ok()?, THREAD_SIZE))
}

/// A task's (tgid << 32 | pid) and comm, for events about a task other than the current one.
#[inline(always)]
pub fn task_ids(task: u64) -> Result<(u64, [u8; 16]), Fault> {
    let pid: u32 = read(task, off!(task_pid))?;
    let tgid: u32 = read(task, off!(task_tgid))?;
    Ok((
        (u64::from(tgid) << 32) | u64::from(pid),
        read(task, off!(task_comm))?,
    ))
}

/// The thread id of a task.
#[inline(always)]
pub fn task_tid(task: u64) -> Result<u32, Fault> {
    read(task, off!(task_pid))
}
