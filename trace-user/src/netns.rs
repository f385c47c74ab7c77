//! The experiment's own network namespace: created for the run and gone with it, so its
//! sysctls (tcp_wmem, tcp_rmem are per namespace) never touch the host's. It has no name
//! (no bind mount under /run/netns): a file descriptor and the experiment's threads hold
//! it, so it ends with the process however that ends, SIGKILL included. Look into it while
//! it lives with `nsenter --net=/proc/PID/fd/N` ([`NetNs::path`]).

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::Command,
    thread,
};

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns, unshare};

pub struct NetNs {
    fd: OwnedFd,
    /// Where other programs open it while sockbuf runs: `/proc/PID/fd/N`.
    pub path: String,
}

impl NetNs {
    /// A new network namespace with loopback up, made by a thread of its own (a namespace
    /// is per thread) that leaves it a file descriptor and ends.
    pub fn create() -> anyhow::Result<Self> {
        remove_stale();
        let fd = thread::spawn(|| -> anyhow::Result<OwnedFd> {
            unshare(CloneFlags::CLONE_NEWNET).context("creating a network namespace")?;
            loopback_up().context("bringing loopback up in the new namespace")?;
            Ok(File::open("/proc/thread-self/ns/net")
                .context("opening the new namespace")?
                .into())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread creating the namespace panicked"))??;
        let path = format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
        log::info!("created a network namespace ({path})");
        Ok(Self { fd, path })
    }

    /// Moves the calling thread into the namespace; sockets it creates live there, and
    /// `/proc/sys/net` it opens shows the namespace's sysctls.
    pub fn enter(&self) -> anyhow::Result<()> {
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).context("entering the namespace")?;
        Ok(())
    }
}

/// `ip link set lo up`, in the calling thread's namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket and ioctl calls on a zeroed `ifreq` naming "lo"; the socket is
    // closed by OwnedFd.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = OwnedFd::from_raw_fd(s);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, c) in req.ifr_name.iter_mut().zip(b"lo") {
            *d = *c as libc::c_char;
        }
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &raw mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Deletes the named namespaces `sockbuf-PID` that versions before this one left behind
/// when killed (their process gone).
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("sockbuf-") else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match Command::new("ip").args(["netns", "del", &name]).status() {
            Ok(s) if s.success() => log::info!("deleted {name}, left by a sockbuf killed before"),
            _ => log::warn!("could not delete {name}, left by a sockbuf killed before"),
        }
    }
}

/// The TCP memory sysctls in force, read in the current thread's namespace.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct TcpSysctls {
    pub tcp_wmem: [u64; 3],
    pub tcp_rmem: [u64; 3],
    /// In pages, system-wide pressure thresholds.
    pub tcp_mem: [u64; 3],
    pub tcp_moderate_rcvbuf: u64,
}

fn path(name: &str) -> String {
    format!("/proc/sys/net/ipv4/{name}")
}

fn read_numbers<const N: usize>(name: &str) -> anyhow::Result<[u64; N]> {
    let s = std::fs::read_to_string(path(name)).with_context(|| format!("reading {name}"))?;
    let v: Vec<u64> = s
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    v.try_into()
        .map_err(|v: Vec<u64>| anyhow::anyhow!("{name} has {} values", v.len()))
}

impl TcpSysctls {
    /// Reads the per-namespace sysctls in the current thread's namespace; `tcp_mem` is
    /// system-wide and only the initial namespace shows it, so the caller reads it there
    /// ([`read_tcp_mem`]).
    pub fn read(tcp_mem: [u64; 3]) -> anyhow::Result<Self> {
        Ok(Self {
            tcp_wmem: read_numbers("tcp_wmem")?,
            tcp_rmem: read_numbers("tcp_rmem")?,
            tcp_mem,
            tcp_moderate_rcvbuf: read_numbers::<1>("tcp_moderate_rcvbuf")?[0],
        })
    }
}

pub fn read_tcp_mem() -> anyhow::Result<[u64; 3]> {
    read_numbers("tcp_mem")
}

/// Writes tcp_wmem or tcp_rmem in the current thread's namespace.
pub fn write_triple(name: &str, v: [u64; 3]) -> anyhow::Result<()> {
    std::fs::write(path(name), format!("{} {} {}", v[0], v[1], v[2]))
        .with_context(|| format!("setting {name} in the experiment's namespace"))
}
