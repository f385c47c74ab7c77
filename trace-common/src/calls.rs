//! The application's system call behind the kernel's send calls. One `sendfile()` or
//! `splice()` reaches TCP as one kernel send per pipe buffer (64 KiB), one `sendmmsg()` as one
//! per message: each send event names its syscall and its piece, and such a call ends with a
//! [`CallEvent`] holding what the application got back.

use crate::{COMM_LEN, Header};

/// Where a send event's kernel call came from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct CallRef {
    /// When the application's call made its first kernel send (its first piece's start):
    /// with the thread id, the key that ties the pieces of one call together.
    pub call_ns: u64,
    /// The x86_64 syscall number the thread was in, or [`NO_SYSCALL`].
    pub syscall: u32,
    /// This kernel send's index among its call's pieces (0 for the first or only one).
    pub piece: u32,
}

/// Not inside a system call: an io_uring worker, or the kernel itself.
pub const NO_SYSCALL: u32 = u32::MAX;

/// x86_64 numbers of the system calls sockbuf names.
pub mod nr {
    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const READV: u32 = 19;
    pub const RECVFROM: u32 = 45;
    pub const RECVMSG: u32 = 47;
    pub const RECVMMSG: u32 = 299;
    pub const PREADV2: u32 = 327;
    pub const WRITEV: u32 = 20;
    pub const SENDFILE: u32 = 40;
    pub const SENDTO: u32 = 44;
    pub const SENDMSG: u32 = 46;
    pub const PWRITEV2: u32 = 328;
    pub const SPLICE: u32 = 275;
    pub const SENDMMSG: u32 = 307;
    pub const IO_URING_ENTER: u32 = 426;
}

/// Whether one call of syscall `nr` can be several kernel sends or receives, and so ends
/// with a [`CallEvent`]: `sendfile`, `splice`, `sendmmsg` and `recvmmsg`.
pub const fn pieced(nr: u32) -> bool {
    matches!(nr, nr::SENDFILE | nr::SPLICE | nr::SENDMMSG | nr::RECVMMSG)
}

/// The name of syscall `nr` where sockbuf knows it.
pub const fn name(nr: u32) -> Option<&'static str> {
    Some(match nr {
        nr::READ => "read",
        nr::READV => "readv",
        nr::RECVFROM => "recvfrom",
        nr::RECVMSG => "recvmsg",
        nr::RECVMMSG => "recvmmsg",
        nr::PREADV2 => "preadv2",
        nr::WRITE => "write",
        nr::WRITEV => "writev",
        nr::SENDFILE => "sendfile",
        nr::SENDTO => "sendto",
        nr::SENDMSG => "sendmsg",
        nr::PWRITEV2 => "pwritev2",
        nr::SPLICE => "splice",
        nr::SENDMMSG => "sendmmsg",
        nr::IO_URING_ENTER => "io_uring_enter",
        _ => return None,
    })
}

/// A `sendfile()`, `splice()`, `sendmmsg()` or `recvmmsg()` that made kernel calls returned
/// (`Header::ts_ns`) to the application. `hdr.sock_id` is its last piece's socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct CallEvent {
    pub hdr: Header,
    pub comm: [u8; COMM_LEN],
    /// The tie of its pieces: the first one's `call_ns`, the syscall, and how many there were.
    pub call: CallRef,
    /// What the application got: bytes (`sendfile`, `splice`), messages (`sendmmsg`,
    /// `recvmmsg`), or `-errno`.
    pub ret: i64,
    /// Bytes its pieces copied into send buffers (out of receive buffers: `recvmmsg`).
    pub copied: u64,
    /// Pieces that failed (at most the last one; an error the application saw only when no
    /// piece before it copied anything).
    pub errors: u32,
    /// `CALL_F_*` bits.
    pub flags: u32,
}

/// The kernel skipped the call's exit (see `counters::EXITS_MISSED`): `ret` is unknown (0),
/// `hdr.ts_ns` the thread's next syscall exit.
pub const CALL_F_EXIT_MISSED: u32 = 1;
