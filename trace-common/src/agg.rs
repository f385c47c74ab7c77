//! In-kernel aggregation for `sockbuf trace --summary`. The per-call events (successful sends
//! and receives, EAGAINs, and each write's time to its ACK) are counted per CPU in
//! [`crate::maps::AGG`] instead of crossing the ring buffer one by one; the loader sums the
//! CPUs at the end. Rare events (other errors, sleeps, state changes, RSTs, FINs, UDP) still
//! stream, so the summary merges both.

use crate::{COMM_LEN, SockAddrs};

/// Values of the `AGGREGATE` global: what `--summary` counts in the kernel.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Streaming: nothing is counted in the kernel.
    Off = 0,
    /// `--summary`: calls, bytes and EAGAINs per socket, from the calls' return hooks only.
    Counts = 1,
    /// `--summary --full`: also each write's time to its ACK (with every hook streaming uses).
    Full = 2,
}

/// Power-of-two buckets per histogram: bucket 0 holds 0, bucket k holds [2^(k-1), 2^k), the
/// last also everything above (2 GiB per call; 35 minutes).
pub const BUCKETS: usize = 32;

/// Sockets [`crate::maps::AGG`] holds by default (`--max-sockets`); entries are allocated
/// as sockets appear, not up front, and freed by userspace when the socket closes.
pub const AGG_ENTRIES: u32 = 8_192;

/// Writes per socket whose ACK can be waited for at once (48 KiB); more are counted as
/// untimed. Loopback with two busy connections on two CPUs had 1 500 waiting.
pub const PENDING_SLOTS: u32 = 4096;

/// Sockets whose writes [`crate::maps::PENDING`] can time at once (at most 48 MiB); writes on
/// further sockets are counted as untimed.
pub const PENDING_ENTRIES: u32 = 1024;

/// One socket's totals on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockAgg {
    /// The task that first counted here (0 when that was an ACK in softirq).
    pub pid: u32,
    /// Whether these are counts a socket kept itself ([`SkAgg`]): [`KEPT_FOLDED`] in the
    /// AGG entry its CLOSE added them to (a read of the socket's own that finds this read
    /// them twice), [`KEPT_LIVE`] in the socket's own as userspace read them; 0: neither.
    pub kept: u32,
    /// The socket's inode number when last counted here (0: not known yet: accepted, not
    /// yet `accept()`ed, when the entry was made).
    pub ino: u64,
    pub comm: [u8; COMM_LEN],
    pub addrs: SockAddrs,
    /// Bytes asked for (`--full`: the counting path does not see them). Send calls that
    /// copied bytes or got EAGAIN (other errors stream as events) are not counted apart:
    /// they are `copy_bytes`' calls and the EAGAINs ([`SockAgg::sends`]), one add less
    /// a call.
    pub requested: u64,
    pub copied: u64,
    /// EAGAINs the application got.
    pub eagain: u64,
    /// EAGAINs of a `sendfile()`/`splice()`/`sendmmsg()` piece after earlier pieces copied
    /// bytes: the call returned those, and the application never saw the error.
    pub unseen_eagain: u64,
    /// `sendfile()`, `splice()` and `sendmmsg()` calls, counted at their first piece (each
    /// piece is one of the sends).
    pub pieced_calls: u64,
    /// Bytes received; receive calls that returned bytes (or 0) or EAGAIN are `recv_bytes`'
    /// calls and `recv_eagain` ([`SockAgg::recvs`]).
    pub received: u64,
    pub recv_eagain: u64,
    /// Writes whose last byte was acked, counted by the ACK path (`ack_us`) or, when the ACK
    /// came before the call returned, by the send path (`call_ack_us`): separate fields, as
    /// the ACK path can interrupt the send path on the same CPU.
    pub acked_writes: u64,
    pub call_acked_writes: u64,
    /// Writes that could not be timed (more than [`PENDING_SLOTS`] waiting, or the call's
    /// start unseen).
    pub untimed_writes: u64,
    /// Writes still waiting when the socket reached CLOSE: those its `snd_una` then covers
    /// were acked after the connection left ESTABLISHED, where no ACK hook sees them
    /// (settled by the close, not timed), the others never were.
    pub close_acked_writes: u64,
    pub unacked_writes: u64,
    /// Bytes copied per send call, bytes per receive call, write-to-ACK microseconds.
    pub copy_bytes: [u64; BUCKETS],
    pub recv_bytes: [u64; BUCKETS],
    pub ack_us: [u64; BUCKETS],
    pub call_ack_us: [u64; BUCKETS],
}

impl SockAgg {
    /// Send calls that copied bytes or got EAGAIN.
    pub fn sends(&self) -> u64 {
        self.copy_bytes.iter().sum::<u64>() + self.eagain + self.unseen_eagain
    }

    /// Receive calls that returned bytes (or 0) or EAGAIN.
    pub fn recvs(&self) -> u64 {
        self.recv_bytes.iter().sum::<u64>() + self.recv_eagain
    }
}

/// [`SockAgg::kept`]'s values.
pub const KEPT_FOLDED: u32 = 1;
pub const KEPT_LIVE: u32 = 2;

/// `--summary` on BTF-typed hooks: one socket's totals kept in the socket itself (its
/// socket-local storage, [`crate::maps::SK_COUNTS`]), shared by every CPU, from its first
/// counted call in ESTABLISHED to its CLOSE, when the kernel adds them to the socket's
/// [`crate::maps::AGG`] entry. Live sockets' are read through sock_diag (the map's keys are
/// sockets: no lookup from userspace can name them).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SkAgg {
    /// The socket's `sock_id`; 0 while the entry is being made (not counted into yet).
    pub id: u64,
    pub agg: SockAgg,
}

/// The writes of one socket waiting for their ACK: a ring the send path fills at `head` and
/// only the ACK path empties, at `tail` (TCP processes one socket's ACKs one at a time).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub head: u32,
    pub tail: u32,
    /// The last ACK that moved forward, and when. An ACK can arrive before its write is
    /// queued here (on loopback, within the call): the next ACK, or the loader at the end,
    /// then finds the write already covered by this one and times it from it.
    pub last_ack_seq: u32,
    pub _pad: u32,
    pub last_ack_ns: u64,
    /// The socket's `sock_id`.
    pub id: u64,
    /// `write_seq` after each write, and when its call started.
    pub seq: [u32; PENDING_SLOTS as usize],
    pub start_ns: [u64; PENDING_SLOTS as usize],
}

impl Pending {
    /// `(end, start_ns)` of each waiting write, oldest first.
    pub fn waiting(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        (0..self.head.wrapping_sub(self.tail).min(PENDING_SLOTS)).map(|k| {
            let i = (self.tail.wrapping_add(k) & (PENDING_SLOTS - 1)) as usize;
            (self.seq[i], self.start_ns[i])
        })
    }

    /// Whether the last ACK covers a write ending at `end`.
    pub fn covered(&self, end: u32) -> bool {
        covers(self.last_ack_seq, self.last_ack_ns, end)
    }
}

/// Whether an ACK of `ack_seq` seen at `ack_ns` (0: none yet) covers a write ending at `end`.
#[inline(always)]
pub const fn covers(ack_seq: u32, ack_ns: u64, end: u32) -> bool {
    ack_ns != 0 && ack_seq.wrapping_sub(end) as i32 >= 0
}

/// The histogram bucket of `v` (a branchy log2: the BPF target has no count-leading-zeros).
#[inline(always)]
pub const fn bucket(v: u64) -> usize {
    if v == 0 {
        return 0;
    }
    if v >= 1 << 32 {
        return BUCKETS - 1;
    }
    // Binary search for the highest set bit: halves of 16, 8, 4, 2, 1 bits (unrolled).
    let (mut b, mut x, mut shift) = (1, v, 16);
    while shift > 0 {
        if x >= 1 << shift {
            x >>= shift;
            b += shift;
        }
        shift /= 2;
    }
    if b >= BUCKETS { BUCKETS - 1 } else { b }
}

const _: () = assert!(core::mem::size_of::<SockAgg>() == 72 + 12 * 8 + 4 * BUCKETS * 8);
const _: () = assert!(core::mem::size_of::<SkAgg>() == 8 + core::mem::size_of::<SockAgg>());
const _: () = assert!(core::mem::size_of::<Pending>() == 32 + 12 * PENDING_SLOTS as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_log2_plus_one() {
        for v in 1u64..(1 << 20) {
            assert_eq!(bucket(v), (u64::BITS - v.leading_zeros()) as usize, "{v}");
        }
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket((1 << 31) + 5), 32.min(BUCKETS - 1));
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }
}
