//! The kernel's own figures for a socket: queue ioctls, TCP_INFO, buffer sizes, inode.

use std::{io, mem, os::fd::AsRawFd};

fn ioctl_int(s: &impl AsRawFd, req: libc::Ioctl) -> io::Result<u64> {
    let mut v: libc::c_int = 0;
    // SAFETY: these ioctls write one int.
    if unsafe { libc::ioctl(s.as_raw_fd(), req, &mut v) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as u64)
}

/// SIOCOUTQ: `write_seq - snd_una`, bytes not yet acked.
pub fn outq(s: &impl AsRawFd) -> io::Result<u64> {
    ioctl_int(s, libc::TIOCOUTQ)
}

/// SIOCOUTQNSD: `write_seq - snd_nxt`, bytes never sent.
pub fn outq_unsent(s: &impl AsRawFd) -> io::Result<u64> {
    const SIOCOUTQNSD: libc::Ioctl = 0x894B;
    ioctl_int(s, SIOCOUTQNSD)
}

/// SIOCINQ: `rcv_nxt - copied_seq`, bytes received and not read.
pub fn inq(s: &impl AsRawFd) -> io::Result<u64> {
    ioctl_int(s, libc::FIONREAD)
}

pub fn tcp_info(s: &impl AsRawFd) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

/// The socket's inode number: sockbuf's `sock_id`.
pub fn ino(s: &impl AsRawFd) -> io::Result<u64> {
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.as_raw_fd()) };
    Ok(nix::sys::stat::fstat(fd).map_err(io::Error::from)?.st_ino)
}
