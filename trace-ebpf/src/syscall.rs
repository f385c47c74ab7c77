//! The send syscall the current task is in, read from the user registers its entry saved at
//! the top of the task's kernel stack (x86_64: `struct pt_regs`; 16 bytes lower with FRED;
//! the place is confirmed by the user code segment found there), so that no program needs
//! to run at every syscall's entry: its flags, and a UDP datagram's destination.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_user};
use trace_common::SockAddrs;

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

/// The current task's user registers and syscall number; `None` in a kernel thread (an
/// io_uring worker) or where they are not where x86_64 keeps them.
#[inline(always)]
fn user_regs() -> Result<Option<(u64, u64)>, Fault> {
    const PT_REGS_SIZE: u64 = 21 * 8;
    const USER_CS: u64 = 0x33;
    let task = unsafe { bpf_get_current_task() };
    let Some((stack, size)) = kernel::task_stack(task) else {
        return Ok(None);
    };
    for pad in [0, 16] {
        let regs = stack + size - pad - PT_REGS_SIZE;
        // cs at 136, orig_ax (the syscall number) at 120.
        if read::<u64>(regs, 136)? == USER_CS {
            return Ok(Some((regs, read::<u64>(regs, 120)?)));
        }
    }
    Ok(None)
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

/// The destination the application named in its `sendto()` or `sendmsg()` (an
/// unconnected UDP socket's datagram): family, address and port in `a`; `false` when the
/// call named none (or is another call: `sendmmsg` names one per message).
#[inline(always)]
pub fn send_dest(a: &mut SockAddrs) -> Result<bool, Fault> {
    let Some((regs, nr)) = user_regs()? else {
        return Ok(false);
    };
    let (name, len) = match nr {
        NR_SENDTO => (arg(regs, 4), arg(regs, 5)),
        NR_SENDMSG => {
            let msg = arg(regs, 1);
            let Some(name) = user::<u64>(msg) else {
                return Ok(false);
            };
            (name, user::<u32>(msg + 8).map_or(0, u64::from))
        }
        _ => return Ok(false),
    };
    if name == 0 || len < 16 {
        return Ok(false);
    }
    let Some(family) = user::<u16>(name) else {
        return Ok(false);
    };
    let Some(port) = user::<u16>(name + 2) else {
        return Ok(false);
    };
    match family {
        AF_INET => {
            let Some(addr) = user::<[u8; 4]>(name + 4) else {
                return Ok(false);
            };
            a.daddr = [0; 16];
            a.daddr[..4].copy_from_slice(&addr);
        }
        AF_INET6 if len >= 24 => {
            let Some(addr) = user::<[u8; 16]>(name + 8) else {
                return Ok(false);
            };
            a.daddr = addr;
        }
        _ => return Ok(false),
    }
    a.rport = u16::from_be(port);
    Ok(true)
}

#[inline(always)]
fn user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// Bytes in a user `iovec` array of `n` entries (at most [`MAX_IOV`]; `None` beyond).
pub const MAX_IOV: u64 = 8;

#[inline(always)]
pub fn user_iov_len(iov: u64, n: u64) -> Option<u64> {
    if n > MAX_IOV {
        return None;
    }
    let mut total = 0u64;
    for i in 0..MAX_IOV {
        if i >= n {
            break;
        }
        total += user::<u64>(iov + i * 16 + 8)?;
    }
    Some(total)
}

/// A user `struct msghdr`'s iovec array and its length (x86-64 layout).
#[inline(always)]
pub fn user_msghdr_iov(msg: u64) -> Option<(u64, u64)> {
    Some((user::<u64>(msg + 16)?, user::<u64>(msg + 24)?))
}
