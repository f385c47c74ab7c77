//! Errors the user can fix: each is one line that says what to do, and exits with code 2.

use crate::btf::BtfError;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("sockbuf needs root (or CAP_BPF and CAP_PERFMON): run it with sudo")]
    NotPrivileged,
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({0}): mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    Tracefs(std::io::Error),
    #[error("--attach {mode} is not available on this kernel: {why}; use --attach auto")]
    AttachUnavailable { mode: &'static str, why: String },
    #[error(
        "no attach backend works on this kernel ({0}); sockbuf needs fentry, kprobes or the tracepoints"
    )]
    NoBackend(String),
    #[error("no process with pid {0}: check the pid (ps -e), or drop -p")]
    NoSuchPid(u32),
    #[error(
        "--cgroup {path}: {why}: give a cgroup v2 directory such as /sys/fs/cgroup/system.slice"
    )]
    BadCgroup { path: String, why: String },
    #[error("sockbuf needs the `{0}` command: apt-get install {1}")]
    MissingTool(&'static str, &'static str),
    #[error("{0}")]
    BadArgs(&'static str),
    #[error("--comm {0:?} is longer than the kernel's 15-byte comm: give the first 15 bytes")]
    CommTooLong(String),
    #[error("cannot write {flag} {path}: {why} (give a path in a writable directory)")]
    Output {
        flag: &'static str,
        path: String,
        why: String,
    },
    #[error("cannot listen on {addr}: {why} (give another address with --listen)")]
    Listen {
        addr: std::net::SocketAddr,
        why: String,
    },
}

impl SetupError {
    /// The exit code for a usage or environment problem, the same as clap's for bad arguments.
    pub const EXIT_CODE: u8 = 2;
}
