//! Command line, as clap derive types. Doc comments are the help text.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::attach::AttachMode;

/// sockbuf: what the Linux kernel does with the bytes an application writes to a socket.
///
/// Traces every TCP send call: bytes requested and copied into the send buffer (or the error,
/// such as EAGAIN), sleeps on a full send buffer, the send queue at that moment, and when the
/// peer's ACK proved the bytes were delivered. Needs root.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
pub struct Cli {
    /// More diagnostics on stderr (-v: what sockbuf does and the eBPF programs' own
    /// warnings; -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream TCP send calls, blocks and ACKs as they happen.
    ///
    /// Examples:
    ///   sockbuf trace -p 1234            # one process, aligned text
    ///   sockbuf trace --port 5432 --json # one port, NDJSON
    ///   sockbuf trace -d 10s             # ten seconds, then totals
    #[command(verbatim_doc_comment)]
    Trace(TraceArgs),
}

/// Which sockets and tasks to trace; checked in the kernel, before any event is written.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only this process (thread group id).
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only tasks with this command name (as in /proc/PID/comm, at most 15 bytes).
    #[arg(short, long, value_name = "COMM")]
    pub comm: Option<String>,

    /// Only connections with this local or remote port.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Only tasks in this cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/nginx.service).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
}

/// How sockbuf hooks into the kernel and moves events.
#[derive(Debug, Args, Clone)]
pub struct TracerArgs {
    /// Attach backend: auto picks fentry, then kprobe, then tracepoint, and says why.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,

    /// Ring buffer size in bytes: a power of two, at least 4096.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20, value_parser = parse_ring_size)]
    pub ring_size: u32,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub tracer: TracerArgs,

    /// One JSON object per line (fields in the README) instead of aligned text.
    #[arg(long)]
    pub json: bool,

    /// Stop after this long (e.g. 500ms, 10s, 2m); default: until Ctrl-C.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}: give a duration such as 500ms, 10s or 2m"))?;
    if d.is_zero() {
        return Err("the duration must be more than 0".to_owned());
    }
    Ok(d)
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|e| format!("{e}: give a byte count such as 8388608"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!(
            "{n} is not a power of two of at least 4096 (e.g. 8388608)"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("such as 500ms")
        );
        assert!(parse_ring_size("5000").is_err());
    }
}
