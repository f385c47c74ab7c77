//! The experiments' flags: `fill` and `udp`.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{TracerArgs, parse_duration};

/// How the fill experiment's client writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FillMode {
    /// O_NONBLOCK: write until EAGAIN persists.
    Nonblocking,
    /// Blocking writes: the writer sleeps in the kernel; then the server drains.
    Blocking,
}

#[derive(Debug, Args)]
pub struct FillArgs {
    #[arg(long, value_enum, default_value_t = FillMode::Nonblocking)]
    pub mode: FillMode,

    /// Bytes per write call.
    #[arg(long, value_name = "BYTES", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=16 << 20))]
    pub chunk: u32,

    /// Pause between write calls (e.g. 200ms, as in the original experiment).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_pause)]
    pub interval: Duration,

    /// SO_SNDBUF for the client, set before connect (default: kernel autotuning).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=1 << 30))]
    pub sndbuf: Option<u32>,

    /// SO_RCVBUF for the server, set before listen (default: kernel autotuning).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=1 << 30))]
    pub rcvbuf: Option<u32>,

    /// Use ::1 instead of 127.0.0.1.
    #[arg(long)]
    pub ipv6: bool,

    /// net.ipv4.tcp_wmem inside the experiment's namespace, as "MIN DEFAULT MAX".
    #[arg(long, value_name = "\"MIN DEF MAX\"", value_parser = parse_triple)]
    pub tcp_wmem: Option<[u64; 3]>,

    /// net.ipv4.tcp_rmem inside the experiment's namespace, as "MIN DEFAULT MAX".
    #[arg(long, value_name = "\"MIN DEF MAX\"", value_parser = parse_triple)]
    pub tcp_rmem: Option<[u64; 3]>,

    /// After the fill (non-blocking mode): close-unread (the server closes without reading:
    /// RST, the client gets ECONNRESET) or close-unsent (the client closes with a full send
    /// queue: every byte still arrives, then the FIN).
    #[arg(long, value_enum, value_name = "WHAT")]
    pub then: Option<crate::fill::Then>,

    /// Blocking mode: how long the server waits, once the writer is asleep, before it reads.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub read_after: Duration,

    /// Keep the sockets open this long after the report, so that they can be inspected
    /// (`ip netns exec sockbuf-PID ss -tmi`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub hold: Option<Duration>,

    /// Events as NDJSON, and the report as the last line (`"kind":"fill_report"`).
    #[arg(long)]
    pub json: bool,

    /// Write a timeline (send and receive queues, sndbuf, writes, EAGAINs, the block) as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    #[command(flatten)]
    pub tracer: TracerArgs,

    #[command(flatten)]
    pub stacks: super::StackArgs,
}

#[derive(Debug, Args)]
pub struct UdpArgs {
    /// Send calls.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,

    /// Bytes per send call.
    #[arg(long, value_name = "BYTES", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=65_507))]
    pub size: u32,

    /// Every send but the last with MSG_MORE: one datagram of count × size bytes (at most
    /// 65507).
    #[arg(long)]
    pub msg_more: bool,

    /// Events as NDJSON, and the report as the last line (`"kind":"udp_report"`).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub tracer: TracerArgs,
}

/// "MIN DEFAULT MAX", as the tcp_wmem/tcp_rmem sysctls take it.
pub fn parse_triple(s: &str) -> Result<[u64; 3], String> {
    let v: Vec<u64> = s
        .split_whitespace()
        .map(|x| x.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{e}: give three byte counts, e.g. \"4096 16384 4194304\""))?;
    match v[..] {
        [min, def, max] if 0 < min && min <= def && def <= max => Ok([min, def, max]),
        [_, _, _] => Err("need 0 < MIN <= DEFAULT <= MAX, e.g. \"4096 16384 4194304\"".to_owned()),
        _ => Err(format!(
            "got {} numbers, need 3, e.g. \"4096 16384 4194304\"",
            v.len()
        )),
    }
}

fn parse_pause(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}: give a duration such as 0s, 200ms or 1s"))
}
