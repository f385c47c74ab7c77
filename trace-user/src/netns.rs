//! The experiment's own network namespace: created for the run, deleted when dropped, so
//! its sysctls (tcp_wmem, tcp_rmem are per namespace) never touch the host's.

use std::{fs::File, io, os::fd::AsFd, process::Command};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

use crate::error::SetupError;

pub struct NetNs {
    pub name: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            anyhow::Error::new(SetupError::MissingTool("ip", "iproute2"))
        } else {
            anyhow::Error::new(e).context("running ip")
        }
    })?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl NetNs {
    /// `ip netns add sockbuf-PID`, with loopback up.
    pub fn create() -> anyhow::Result<Self> {
        let name = format!("sockbuf-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        log::info!("created network namespace {}", ns.name);
        Ok(ns)
    }

    /// Moves the calling thread into the namespace; sockets it creates live there, and
    /// `/proc/sys/net` it opens shows the namespace's sysctls.
    pub fn enter(&self) -> anyhow::Result<()> {
        let f = File::open(format!("/run/netns/{}", self.name)).context("opening the namespace")?;
        setns(f.as_fd(), CloneFlags::CLONE_NEWNET).context("entering the namespace")?;
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        match ip(&["netns", "del", &self.name]) {
            Ok(()) => log::info!("deleted network namespace {}", self.name),
            Err(e) => log::warn!("could not delete network namespace {}: {e:#}", self.name),
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
