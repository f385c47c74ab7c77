//! Command line, as clap derive types. Doc comments are the help text.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

pub use self::{
    experiments::{FillArgs, FillMode, UdpArgs, parse_triple},
    live::{ExportArgs, TopArgs},
    stacks::{StackArgs, StacksWhich},
};
use crate::attach::AttachMode;

mod experiments;
mod live;
mod stacks;

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
    /// Stream send and receive calls, blocks, ACKs, state changes, RSTs and FINs (TCP), and
    /// UDP sends and datagrams, as they happen.
    ///
    /// Examples:
    ///   sockbuf trace -p 1234            # one process, aligned text
    ///   sockbuf trace --port 5432 --json # one port, NDJSON
    ///   sockbuf trace -d 10s             # ten seconds, then totals
    ///   sockbuf trace -s -d 30s          # counts and histograms per socket after 30 s
    ///   sockbuf trace -s --full -p 1234  # also sleeps and write-to-ACK times
    #[command(verbatim_doc_comment)]
    Trace(TraceArgs),

    /// A live per-socket view, refreshed each interval: queues (Send-Q, unsent, in flight,
    /// Recv-Q, send buffer in use), send and receive rates, calls and EAGAINs per second,
    /// RSTs; with --full also the share of time writers slept on a full send buffer and
    /// write-to-ACK times. Counts in the kernel as `trace --summary` does: cheap to leave
    /// open. Only this network namespace's sockets have queue figures (read as `ss` does).
    ///
    /// Keys: s / S next / previous sort column, r reverse, / filter (pid, comm or port),
    /// space freeze, q quit.
    ///
    /// Examples:
    ///   sockbuf top                        # every TCP socket, refreshed each second
    ///   sockbuf top -p 1234 --full         # one process, with sleeps and ACK times
    ///   sockbuf top --batch -n 5 --json    # five NDJSON snapshots, then exit
    #[command(verbatim_doc_comment)]
    Top(TopArgs),

    /// Serve the in-kernel counts at /metrics in the OpenMetrics text format, for
    /// Prometheus: send and receive calls and bytes, EAGAINs, other errors by name, RSTs,
    /// unread bytes dropped at close (with --full: time asleep on a full send buffer),
    /// the largest queues, and sockbuf's own health; per label set (--group-by), bounded by
    /// --max-series. Nothing per call crosses the ring buffer. SIGTERM or Ctrl-C stops it.
    ///
    /// Examples:
    ///   sockbuf export                                   # 127.0.0.1:9470, by comm and container
    ///   sockbuf export --listen 0.0.0.0:9470             # reachable from other hosts
    ///   sockbuf export --group-by comm,lport --port 443  # one service, by command and port
    #[command(verbatim_doc_comment)]
    Export(ExportArgs),

    /// Run the send-buffer fill experiment and trace it: a client writes into a connection
    /// whose peer never reads, until the send buffer is full.
    ///
    /// Runs in a fresh network namespace on loopback (the host's sysctls are never touched),
    /// streams the client's send events, then reports where the accepted bytes are (client
    /// send queue, server receive queue), redoes the arithmetic of the original experiment
    /// with real numbers, and checks it against the trace. Exit code 1 if a check fails.
    ///
    /// Examples:
    ///   sockbuf fill                                   # non-blocking, 1 KiB writes
    ///   sockbuf fill --interval 200ms                  # the article's pace
    ///   sockbuf fill --mode blocking --plot fill.svg   # sleep on a full buffer, then drain
    ///   sockbuf fill --tcp-wmem "4096 16384 1048576"   # another tcp_wmem, host untouched
    ///   sockbuf fill --then close-unread               # close with unread data: RST
    ///   sockbuf fill --then close-unsent               # close with a full send queue: FIN last
    #[command(verbatim_doc_comment)]
    Fill(FillArgs),

    /// Run the UDP buffer experiment and trace it: datagrams from a connected UDP socket,
    /// with or without MSG_MORE, to a receiver that reads them afterwards.
    ///
    /// Runs in a fresh network namespace on loopback. With --msg-more every send but the
    /// last carries MSG_MORE: the kernel corks the bytes in the send queue and sends one
    /// datagram of their sum on the last send. Exit code 1 if a check fails.
    ///
    /// Examples:
    ///   sockbuf udp                          # 4 datagrams of 1000 B
    ///   sockbuf udp --msg-more               # one datagram of 4000 B, corked until the last send
    ///   sockbuf udp --count 10 --size 100 --json
    #[command(verbatim_doc_comment)]
    Udp(UdpArgs),

    /// Say which attach backends work on this kernel: loads every program (the kernel's
    /// verifier checks each), attaches it, and unloads it again.
    Check {
        /// One JSON object per backend.
        #[arg(long)]
        json: bool,
    },

    /// Feed ring-buffer records written by `trace --record` through decoding, ACK matching
    /// and one output again, without the kernel, and say how many events per second one
    /// core handles (`cargo xtask bench`). Needs no privileges.
    #[command(hide = true)]
    Replay(ReplayArgs),
}

impl Command {
    /// Whether the command runs until Ctrl-C or SIGTERM (see `stop::watch`); the others
    /// keep the default action, which ends them at once.
    pub fn ends_on_signals(&self) -> bool {
        !matches!(self, Self::Check { .. } | Self::Replay(_))
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A file `sockbuf trace --record FILE` wrote.
    pub file: PathBuf,

    /// The output the events go through.
    #[arg(long, value_enum, default_value_t = ReplayOutput::Json)]
    pub output: ReplayOutput,

    /// Where the output goes (default: /dev/null).
    #[arg(long, value_name = "PATH")]
    pub to: Option<PathBuf>,

    /// Passes over the records; the median pass is reported.
    #[arg(long, default_value_t = 5)]
    pub passes: u32,

    #[command(flatten)]
    pub bounds: BoundArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayOutput {
    Json,
    Text,
    /// `--summary`'s per-socket rows, built from the events in user space.
    Summary,
}

impl ReplayOutput {
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Text => "text",
            Self::Summary => "summary",
        }
    }
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
    #[arg(long, value_enum, default_value_t = AttachMode::Auto, env = "SOCKBUF_ATTACH")]
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

    /// One JSON object per line (fields in docs/trace.md) instead of aligned text.
    #[arg(long)]
    pub json: bool,

    /// No line per event: at the end, per-socket totals and log2 histograms, counted in the
    /// kernel: send and receive calls, bytes, EAGAINs, bytes per call. Hooks only the calls'
    /// returns (and the rare state changes and RSTs), to stay cheap.
    #[arg(short, long, conflicts_with_all = ["stacks", "folded", "flamegraph"])]
    pub summary: bool,

    /// With --summary: also requested bytes, sleeps on a full send buffer, FINs, UDP
    /// datagrams out, and each write's time to the ACK of its last byte. Uses every hook
    /// streaming does, so it costs about as much as streaming.
    #[arg(long, requires = "summary")]
    pub full: bool,

    /// Stop after this long (e.g. 500ms, 10s, 2m); default: until Ctrl-C.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    #[command(flatten)]
    pub bounds: BoundArgs,

    #[command(flatten)]
    pub stacks: StackArgs,

    /// Also write every ring-buffer record, as read, to FILE (for `sockbuf replay`).
    #[arg(long, value_name = "FILE", hide = true)]
    pub record: Option<PathBuf>,
}

/// What sockbuf keeps per socket, bounded so that it can run for days on a host whose
/// connections come and go. Hitting a bound is counted and reported by name.
#[derive(Debug, Args, Clone)]
pub struct BoundArgs {
    /// Sockets followed one by one at once: with --summary, the kernel's table of counts and
    /// the live rows (a socket met past it is counted in its group); streaming, the sockets
    /// whose writes wait for their ACK. Default: 8192, fewer on hosts with so many CPUs that
    /// the kernel's preallocated table (N × CPUs × 1.2 KiB) would pass 256 MiB.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..=1 << 20))]
    max_sockets: Option<u32>,

    /// With --summary: closed sockets kept as rows of their own, the largest by --top-by;
    /// every other closed socket is folded into a group by command and service port.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub top: u32,

    /// What --top ranks closed sockets by.
    #[arg(long, value_enum, default_value_t = crate::summary::TopBy::Bytes)]
    pub top_by: crate::summary::TopBy,

    /// With --summary: groups of closed sockets; past it, one "(other)" group takes the rest.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub max_groups: u32,
}

impl BoundArgs {
    /// `--max-sockets`, or its default for this host's CPUs.
    pub fn max_sockets(&self) -> u32 {
        self.max_sockets.unwrap_or_else(|| {
            const BUDGET: usize = 256 << 20;
            let per_socket = std::mem::size_of::<trace_common::agg::SockAgg>()
                * std::thread::available_parallelism().map_or(1, usize::from);
            (BUDGET / per_socket).clamp(1024, trace_common::agg::AGG_ENTRIES as usize) as u32
        })
    }

    pub fn summary(&self) -> crate::summary::Bounds {
        crate::summary::Bounds {
            max_sockets: self.max_sockets() as usize,
            top: self.top as usize,
            top_by: self.top_by,
            max_groups: self.max_groups as usize,
        }
    }
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
        assert_eq!(
            parse_triple("4096 16384 1048576"),
            Ok([4096, 16384, 1_048_576])
        );
        assert!(
            parse_triple("4096 16384")
                .unwrap_err()
                .contains("got 2 numbers")
        );
        assert!(parse_triple("5 4 3").is_err());
    }
}
