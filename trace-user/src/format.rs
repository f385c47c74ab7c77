//! Naming of kernel values for people: errno names, MSG_* flags, addresses.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::OnceLock,
};

use nix::errno::Errno;
use trace_common::{COMM_LEN, SockAddrs};

/// `-errno` as its name (`EAGAIN`), for display and JSON.
pub struct ErrName(pub i64);

impl fmt::Display for ErrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Errno's Debug is its name; format it on the stack so width and alignment apply.
        let mut buf = [0u8; 32];
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        let _ = match Errno::from_raw((-self.0) as i32) {
            Errno::UnknownErrno => {
                std::io::Write::write_fmt(&mut cur, format_args!("E{}", -self.0))
            }
            e => std::io::Write::write_fmt(&mut cur, format_args!("{e:?}")),
        };
        let len = cur.position() as usize;
        f.pad(std::str::from_utf8(&buf[..len]).unwrap_or("E?"))
    }
}

/// The `MSG_*` flags a send or receive call can carry, as the kernel numbers them.
const MSG_FLAGS: &[(u32, &str)] = &[
    (0x1, "MSG_OOB"),
    (0x2, "MSG_PEEK"),
    (0x4, "MSG_DONTROUTE"),
    (0x20, "MSG_TRUNC"),
    (0x40, "MSG_DONTWAIT"),
    (0x80, "MSG_EOR"),
    (0x100, "MSG_WAITALL"),
    (0x800, "MSG_CONFIRM"),
    (0x2000, "MSG_ERRQUEUE"),
    (0x4000, "MSG_NOSIGNAL"),
    (0x8000, "MSG_MORE"),
    (0x0400_0000, "MSG_ZEROCOPY"),
    (0x0800_0000, "MSG_SPLICE_PAGES"),
    (0x2000_0000, "MSG_FASTOPEN"),
];

/// The names of the known flags set in `flags`.
pub fn msg_flag_names(flags: u32) -> impl Iterator<Item = &'static str> {
    MSG_FLAGS
        .iter()
        .filter(move |(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
}

/// `MSG_*` flags joined with `|`, for text output.
pub struct MsgFlags(pub u32);

impl fmt::Display for MsgFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in msg_flag_names(self.0).enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            f.write_str(name.trim_start_matches("MSG_"))?;
        }
        Ok(())
    }
}

const AF_INET6: u16 = 10;

pub fn local_ip(a: &SockAddrs) -> IpAddr {
    ip(a.family, &a.saddr)
}

pub fn remote_ip(a: &SockAddrs) -> IpAddr {
    ip(a.family, &a.daddr)
}

fn ip(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

pub fn family_name(a: &SockAddrs) -> &'static str {
    if a.family == AF_INET6 { "ipv6" } else { "ipv4" }
}

/// Bytes a close threw away unread, from the socket's state event: only a close straight
/// from ESTABLISHED or CLOSE_WAIT to CLOSE does that (the kernel resets a connection closed
/// with unread data instead of sending a FIN). `recv_q` counts an arrived FIN as a byte:
/// one that arrived (CLOSE_WAIT) is no data. An orderly close, through FIN_WAIT1 or
/// LAST_ACK, had nothing unread but perhaps the peer's FIN.
pub fn dropped_at_close(e: &trace_common::SockEvent) -> u64 {
    const ESTABLISHED: u32 = 1;
    const CLOSE: u32 = 7;
    const CLOSE_WAIT: u32 = 8;
    if e.hdr.kind != trace_common::EventKind::State as u32 || e.new_state != CLOSE {
        return 0;
    }
    let q = u64::from(e.recv.recv_q);
    match e.old_state {
        ESTABLISHED => q,
        CLOSE_WAIT => q.saturating_sub(1),
        _ => 0,
    }
}

/// `enum sk_rst_reason` (6.10 and later): why the kernel sent a RST, named from the running
/// kernel's BTF because kernels insert new reasons in the middle. `u32::MAX`: the kernel's
/// tracepoint does not pass a reason.
pub fn rst_reason(reason: u32) -> &'static str {
    static NAMES: OnceLock<HashMap<u32, String>> = OnceLock::new();
    if reason == u32::MAX {
        return "UNKNOWN";
    }
    let names = NAMES.get_or_init(|| {
        crate::btf::KernelBtf::from_sys()
            .map(|b| b.enum_names("sk_rst_reason", "SK_RST_REASON_"))
            .unwrap_or_default()
            .into_iter()
            .collect()
    });
    names.get(&reason).map_or("OTHER", String::as_str)
}

pub fn protocol_name(proto: u32) -> &'static str {
    match proto {
        6 => "tcp",
        17 => "udp",
        _ => "other",
    }
}

/// A task's comm up to its NUL.
pub fn comm_str(comm: &[u8; COMM_LEN]) -> &str {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    std::str::from_utf8(&comm[..end]).unwrap_or("?")
}

/// Nanoseconds as a short human duration (`1.25ms`).
pub struct Nanos(pub u64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0 as f64;
        match self.0 {
            0..1_000 => write!(f, "{}ns", self.0),
            1_000..1_000_000 => write!(f, "{:.1}us", n / 1e3),
            1_000_000..1_000_000_000 => write!(f, "{:.2}ms", n / 1e6),
            _ => write!(f, "{:.3}s", n / 1e9),
        }
    }
}

/// CLOCK_MONOTONIC now, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// A syscall by name: `sendfile`, `none` outside any (an io_uring worker), else
/// `syscall_N`.
pub struct SyscallName(pub u32);

impl std::fmt::Display for SyscallName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0, trace_common::calls::name(self.0)) {
            (_, Some(name)) => f.write_str(name),
            (trace_common::calls::NO_SYSCALL, None) => f.write_str("none"),
            (nr, None) => write!(f, "syscall_{nr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(ErrName(-11).to_string(), "EAGAIN");
        assert_eq!(format!("{:>8}", ErrName(-11)), "  EAGAIN");
        assert_eq!(ErrName(-104).to_string(), "ECONNRESET");
        assert_eq!(MsgFlags(0x40 | 0x8000).to_string(), "DONTWAIT|MORE");
        assert_eq!(Nanos(1_500_000).to_string(), "1.50ms");
        assert_eq!(comm_str(b"abc\0\0\0\0\0\0\0\0\0\0\0\0\0"), "abc");
        assert_eq!(rst_reason(11), "TCP_ABORT_ON_CLOSE");
        assert_eq!(rst_reason(u32::MAX), "UNKNOWN");
    }
}
