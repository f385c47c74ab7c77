//! The send syscall the current task is in, read from the user registers its entry saved at
//! the top of the task's kernel stack (x86_64: `struct pt_regs`; 16 bytes lower with FRED;
//! the place is confirmed by the user code segment found there), so that no program needs
//! to run at every syscall's entry: its flags, and a UDP datagram's destination.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_task, bpf_probe_read_user, bpf_probe_read_user_buf, generated::bpf_loop,
    },
};

use crate::kernel::{self, Fault, read};

/// x86_64 syscall numbers of the send calls.
pub const NR_WRITE: u64 = 1;
pub const NR_WRITEV: u64 = 20;
pub const NR_SENDTO: u64 = 44;
pub const NR_SENDMSG: u64 = 46;
pub const NR_SENDMMSG: u64 = 307;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The `n`th argument (0–5) of the syscall whose user registers are at `regs` (x86_64's
/// `struct pt_regs`, the ptrace layout: di, si, dx, r10, r8, r9).
#[inline(always)]
pub fn arg(regs: u64, n: usize) -> u64 {
    let off = match n {
        0 => 112,
        1 => 104,
        2 => 96,
        3 => 56,
        4 => 72,
        _ => 64,
    };
    read::<u64>(regs, off).unwrap_or(0)
}

/// A 64-bit user task's code segment, in its saved registers.
pub const USER_CS: u64 = 0x33;
/// An io_uring worker's registers are a copy of those of the syscall that created it.
pub const PF_IO_WORKER: u32 = 0x10;

/// The current task's user registers and syscall number; `None` in an io_uring worker or
/// a kernel thread, or where they are not where x86_64 keeps them.
#[inline(always)]
pub fn user_regs() -> Result<Option<(u64, u64)>, Fault> {
    const PT_REGS_SIZE: u64 = 21 * 8;
    let task = unsafe { bpf_get_current_task() };
    if kernel::task_flags(task)? & PF_IO_WORKER != 0 {
        return Ok(None);
    }
    let Some((stack, size)) = kernel::task_stack(task) else {
        return Ok(None);
    };
    for pad in [0, 16] {
        let regs = stack + size - pad - PT_REGS_SIZE;
        // cs at 136, orig_ax (the syscall number) at 120.
        if read::<u64>(regs, 136)? == USER_CS {
            return Ok(Some((regs, read::<u64>(regs, ORIG_AX)?)));
        }
    }
    Ok(None)
}

/// Where `struct pt_regs` keeps the syscall's number (`orig_ax`).
pub const ORIG_AX: u32 = 120;

/// The syscall the current task is in; `None` outside one (see [`user_regs`]).
#[inline(always)]
pub fn current_nr() -> Result<Option<u32>, Fault> {
    Ok(user_regs()?.map(|(_, nr)| nr as u32))
}

/// The flags argument of the send syscall the current task is in (`sendto`, `sendmmsg`:
/// the 4th, `sendmsg`: the 3rd; 0 for `write` and the others).
#[inline(always)]
pub fn send_flags() -> Result<u32, Fault> {
    let Some((regs, nr)) = user_regs()? else {
        return Ok(0);
    };
    let flags = match nr {
        NR_SENDTO | NR_SENDMMSG => arg(regs, 3),
        NR_SENDMSG => arg(regs, 2),
        _ => 0,
    };
    Ok(flags as u32)
}

/// The user `sockaddr` (address, length) the send syscall the current task is in names,
/// `sendto()`'s or `sendmsg()`'s; `None` for another call (`sendmmsg` names one per message)
/// or none named.
#[inline(always)]
fn dest_name() -> Result<Option<(u64, u64)>, Fault> {
    let Some((regs, nr)) = user_regs()? else {
        return Ok(None);
    };
    let (name, len) = match nr {
        NR_SENDTO => (arg(regs, 4), arg(regs, 5)),
        NR_SENDMSG => {
            let msg = arg(regs, 1);
            let Some(name) = user::<u64>(msg) else {
                return Ok(None);
            };
            (name, user::<u32>(msg + 8).map_or(0, u64::from))
        }
        _ => return Ok(None),
    };
    Ok((name != 0 && len >= 16).then_some((name, len)))
}

/// The destination port the send call named (an unconnected UDP socket's datagram); 0 when
/// it named none.
#[inline(always)]
pub fn send_dest_port() -> Result<u16, Fault> {
    let Some((name, _)) = dest_name()? else {
        return Ok(0);
    };
    match user::<u16>(name) {
        Some(AF_INET | AF_INET6) => Ok(user::<u16>(name + 2).map_or(0, u16::from_be)),
        _ => Ok(0),
    }
}

/// The destination the send call named: (address, IPv4 in the first 4 bytes; port);
/// `None` when it named none.
#[inline(always)]
pub fn send_dest() -> Result<Option<([u8; 16], u16)>, Fault> {
    let Some((name, len)) = dest_name()? else {
        return Ok(None);
    };
    let (Some(family), Some(port)) = (user::<u16>(name), user::<u16>(name + 2)) else {
        return Ok(None);
    };
    let mut addr = [0u8; 16];
    let read = match family {
        AF_INET => unsafe { bpf_probe_read_user_buf((name + 4) as *const u8, &mut addr[..4]) },
        AF_INET6 if len >= 24 => unsafe {
            bpf_probe_read_user_buf((name + 8) as *const u8, &mut addr)
        },
        _ => return Ok(None),
    };
    Ok(read.is_ok().then_some((addr, u16::from_be(port))))
}

#[inline(always)]
fn user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// The most iovecs one call may pass (the kernel's `UIO_MAXIOV`; more fail with EINVAL).
const UIO_MAXIOV: u64 = 1024;

/// [`user_iov_len`]'s running sum, for its `bpf_loop` callback.
#[repr(C)]
struct IovSum {
    iov: u64,
    total: u64,
    failed: u64,
}

/// Adds iovec `i`'s length; 1 (stop) when it cannot be read.
extern "C" fn add_iov(i: u32, ctx: *mut c_void) -> i64 {
    let sum = unsafe { &mut *ctx.cast::<IovSum>() };
    match user::<u64>(sum.iov + u64::from(i) * 16 + 8) {
        Some(len) => {
            sum.total = sum.total.wrapping_add(len);
            0
        }
        None => {
            sum.failed = 1;
            1
        }
    }
}

/// Bytes in a user `iovec` array of `n` entries; `None` when it cannot be read. A
/// `bpf_loop` callback, verified once, rather than an open-coded loop verified pass by pass.
#[inline(always)]
pub fn user_iov_len(iov: u64, n: u64) -> Option<u64> {
    if n > UIO_MAXIOV {
        return None;
    }
    // On the stack: bpf_loop's context must be (the verifier refuses a map value).
    let mut sum = IovSum {
        iov,
        total: 0,
        failed: 0,
    };
    unsafe { bpf_loop(n as u32, add_iov as *mut c_void, (&raw mut sum).cast(), 0) };
    (sum.failed == 0).then_some(sum.total)
}

/// A user `struct msghdr`'s iovec array and its length (x86-64 layout).
#[inline(always)]
pub fn user_msghdr_iov(msg: u64) -> Option<(u64, u64)> {
    Some((user::<u64>(msg + 16)?, user::<u64>(msg + 24)?))
}
