//! Userspace side: `aya::Pod` for the types the loader hands to the kernel, and decoding of
//! ring-buffer records.

use core::mem::size_of;

use crate::{
    AckEvent, BlockEvent, EventKind, Filter, Header, KernelOffsets, RecvEvent, SendEvent,
    SockEvent, StackTopEvent, UdpEvent, calls::CallEvent,
};

// SAFETY: all of these are `#[repr(C)]`, made of integers only, and valid for any bit pattern.
unsafe impl aya::Pod for Filter {}
unsafe impl aya::Pod for KernelOffsets {}
unsafe impl aya::Pod for SendEvent {}
unsafe impl aya::Pod for BlockEvent {}
unsafe impl aya::Pod for StackTopEvent {}
unsafe impl aya::Pod for AckEvent {}
unsafe impl aya::Pod for RecvEvent {}
unsafe impl aya::Pod for SockEvent {}
unsafe impl aya::Pod for UdpEvent {}
unsafe impl aya::Pod for CallEvent {}
unsafe impl aya::Pod for crate::agg::SockAgg {}
unsafe impl aya::Pod for crate::agg::SkAgg {}
unsafe impl aya::Pod for crate::agg::Pending {}

impl SendEvent {
    /// Bytes the call put into TCP, where known (see [`SendEvent::tcp_bytes`]).
    pub fn tcp_bytes(&self) -> Option<u64> {
        (self.flags & crate::SEND_F_TCP_BYTES != 0).then_some(self.tcp_bytes)
    }

    /// Stream offset of the first byte the call put into TCP: `seq_end` less those bytes
    /// (what the call copied, unless a layer above TCP made them more or fewer).
    pub fn seq_start(&self) -> u64 {
        let bytes = self.tcp_bytes().unwrap_or(self.ret.max(0) as u64);
        self.seq_end - bytes.min(self.seq_end)
    }
}

/// One decoded ring-buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Send(SendEvent),
    Block(BlockEvent),
    Ack(AckEvent),
    /// A sender fell asleep; `end_ns` is 0.
    BlockStart(BlockEvent),
    Recv(RecvEvent),
    /// State change, RST or FIN: `hdr.kind` says which.
    Sock(SockEvent),
    /// UDP send call or datagram out: `hdr.kind` says which.
    Udp(UdpEvent),
    /// A `sendfile()`, `splice()` or `sendmmsg()` returned.
    Call(CallEvent),
    /// The top of a user stack, for the next event of its thread (boxed: it is the largest
    /// by far, and rare).
    StackTop(alloc::boxed::Box<StackTopEvent>),
}

/// A record that does not match any known event layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its kind's struct (or than a header).
    Short { kind: u32, len: usize },
    /// A kind id this build does not know.
    UnknownKind(u32),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Short { kind, len } => write!(f, "record of kind {kind} is only {len} bytes"),
            Self::UnknownKind(k) => write!(f, "unknown event kind {k}"),
        }
    }
}

/// Reads a `T` from the start of `bytes`, which may be unaligned.
fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            kind,
            len: bytes.len(),
        });
    }
    // SAFETY: length checked above; T is a plain-old-data repr(C) struct.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl Event {
    /// Decodes one ring-buffer record.
    pub fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        let hdr: Header = read(bytes, 0)?;
        match EventKind::from_u32(hdr.kind) {
            Some(EventKind::Send) => read(bytes, hdr.kind).map(Event::Send),
            Some(EventKind::Block) => read(bytes, hdr.kind).map(Event::Block),
            Some(EventKind::Ack) => read(bytes, hdr.kind).map(Event::Ack),
            Some(EventKind::BlockStart) => read(bytes, hdr.kind).map(Event::BlockStart),
            Some(EventKind::Recv) => read(bytes, hdr.kind).map(Event::Recv),
            Some(
                EventKind::State
                | EventKind::RstOut
                | EventKind::RstIn
                | EventKind::FinOut
                | EventKind::FinIn,
            ) => read(bytes, hdr.kind).map(Event::Sock),
            Some(EventKind::UdpSend | EventKind::UdpOut) => read(bytes, hdr.kind).map(Event::Udp),
            Some(EventKind::Call) => read(bytes, hdr.kind).map(Event::Call),
            Some(EventKind::StackTop) => {
                read(bytes, hdr.kind).map(|e| Event::StackTop(alloc::boxed::Box::new(e)))
            }
            None => Err(DecodeError::UnknownKind(hdr.kind)),
        }
    }

    pub fn header(&self) -> &Header {
        match self {
            Event::Send(e) => &e.hdr,
            Event::Block(e) | Event::BlockStart(e) => &e.hdr,
            Event::Ack(e) => &e.hdr,
            Event::Recv(e) => &e.hdr,
            Event::Sock(e) => &e.hdr,
            Event::Udp(e) => &e.hdr,
            Event::Call(e) => &e.hdr,
            Event::StackTop(e) => &e.hdr,
        }
    }
}

/// The bytes of a plain-old-data value, as the kernel writes it into the ring buffer.
pub fn as_bytes<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod: no padding-dependent invariants, any byte view is valid to read.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RecvQueue, SEND_F_REQUESTED, SendQueue, SockAddrs, calls::CallRef};

    fn header(kind: EventKind) -> Header {
        Header {
            kind: kind as u32,
            cpu: 1,
            ts_ns: 123_456_789,
            pid: 42,
            tid: 43,
            sock_id: 9_999,
            ino: 9_999,
        }
    }

    #[test]
    fn send_round_trip() {
        let ev = SendEvent {
            hdr: header(EventKind::Send),
            comm: *b"writer\0\0\0\0\0\0\0\0\0\0",
            addrs: SockAddrs {
                family: 2,
                lport: 5000,
                rport: 40_000,
                _pad: 0,
                saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            start_ns: 123_000_000,
            requested: 1000,
            ret: -11,
            msg_flags: 0x40,
            flags: SEND_F_REQUESTED,
            queue: SendQueue {
                sndbuf: 16_384,
                wmem_queued: 9_000,
                send_q: 8_000,
                unsent: 3_000,
                in_flight: 5_000,
                _pad: 0,
                acked: 77,
            },
            seq_end: 8_077,
            call: CallRef {
                call_ns: 122_000_000,
                syscall: crate::calls::nr::SENDFILE,
                piece: 3,
            },
            tcp_bytes: 1_058,
            stacks: crate::StackIds {
                kernel: 7,
                user: crate::NO_STACK,
            },
        };
        assert_eq!(Event::parse(as_bytes(&ev)), Ok(Event::Send(ev)));
        // Without SEND_F_TCP_BYTES the call's TCP bytes are what it copied (nothing here).
        assert_eq!((ev.tcp_bytes(), ev.seq_start()), (None, 8_077));
        let layered = SendEvent {
            ret: 1_000,
            flags: crate::SEND_F_TCP_BYTES,
            ..ev
        };
        assert_eq!(layered.seq_start(), 8_077 - 1_058);
        let call = CallEvent {
            hdr: header(EventKind::Call),
            comm: [b'y'; 16],
            call: ev.call,
            ret: 196_608,
            copied: 196_608,
            errors: 1,
            flags: 0,
        };
        assert_eq!(Event::parse(as_bytes(&call)), Ok(Event::Call(call)));
    }

    #[test]
    fn block_and_ack_round_trip() {
        let block = BlockEvent {
            hdr: header(EventKind::Block),
            comm: [b'x'; 16],
            start_ns: 1,
            end_ns: 2,
            left: 3,
            queue: SendQueue::default(),
            stacks: crate::StackIds::NONE,
        };
        assert_eq!(Event::parse(as_bytes(&block)), Ok(Event::Block(block)));
        let ack = AckEvent {
            hdr: header(EventKind::Ack),
            prev_acked: 10,
            acked: 20,
        };
        assert_eq!(Event::parse(as_bytes(&ack)), Ok(Event::Ack(ack)));
    }

    #[test]
    fn receive_lifecycle_and_udp_round_trip() {
        let recv = RecvEvent {
            hdr: header(EventKind::Recv),
            comm: [b'r'; 16],
            addrs: SockAddrs::default(),
            ret: 4096,
            msg_flags: 0x40,
            protocol: 6,
            queue: RecvQueue {
                rcvbuf: 131_072,
                rmem_alloc: 8_192,
                recv_q: 100,
                _pad: 0,
                received: 1 << 33,
            },
            call: CallRef {
                call_ns: 5,
                syscall: crate::calls::nr::RECVMMSG,
                piece: 2,
            },
            flags: crate::RECV_F_UNSEEN,
            _pad: 0,
        };
        assert_eq!(Event::parse(as_bytes(&recv)), Ok(Event::Recv(recv)));
        for kind in [
            EventKind::State,
            EventKind::RstOut,
            EventKind::RstIn,
            EventKind::FinOut,
            EventKind::FinIn,
        ] {
            let ev = SockEvent {
                hdr: header(kind),
                comm: [b's'; 16],
                addrs: SockAddrs::default(),
                old_state: 1,
                new_state: 4,
                reason: 11,
                _pad: 0,
                seq: 4_000_000,
                send: SendQueue::default(),
                recv: RecvQueue::default(),
            };
            assert_eq!(Event::parse(as_bytes(&ev)), Ok(Event::Sock(ev)));
        }
        for kind in [EventKind::UdpSend, EventKind::UdpOut] {
            let ev = UdpEvent {
                hdr: header(kind),
                comm: [b'u'; 16],
                addrs: SockAddrs::default(),
                ret: 1000,
                msg_flags: 0x8000,
                sndbuf: 212_992,
                wmem_alloc: 2_304,
                corked: 3_000,
                pending: 2,
                flags: 0,
                call: CallRef {
                    call_ns: 9,
                    syscall: crate::calls::nr::SENDMMSG,
                    piece: 1,
                },
            };
            assert_eq!(Event::parse(as_bytes(&ev)), Ok(Event::Udp(ev)));
        }
    }

    #[test]
    fn rejects_short_and_unknown() {
        let ack = AckEvent {
            hdr: header(EventKind::Ack),
            prev_acked: 10,
            acked: 20,
        };
        let bytes = as_bytes(&ack);
        assert_eq!(
            Event::parse(&bytes[..40]),
            Err(DecodeError::Short { kind: 3, len: 40 })
        );
        let mut unknown = ack;
        unknown.hdr.kind = 77;
        assert_eq!(
            Event::parse(as_bytes(&unknown)),
            Err(DecodeError::UnknownKind(77))
        );
        assert_eq!(
            Event::parse(&bytes[..8]),
            Err(DecodeError::Short { kind: 0, len: 8 })
        );
    }

    #[test]
    fn standby_copies_are_named_after_their_programs() {
        use crate::standby::{PROGRAMS, is_copy, of, slot};
        for (i, (p, sb)) in PROGRAMS.iter().enumerate() {
            assert_eq!(sb.strip_prefix("sb_"), Some(*p));
            assert_eq!(slot(p), i as u32, "{p} listed twice");
            assert_eq!(of(p), Some((i as u32, *sb)));
            assert!(is_copy(sb) && !is_copy(p));
        }
        assert_eq!(of("block_sched_switch"), None);
    }
}
