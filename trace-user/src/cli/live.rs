//! The flags of the commands that stay up and refresh: `top` and `export`.

use std::time::Duration;

use clap::Args;

use super::{BoundArgs, FilterArgs, TracerArgs, parse_duration};

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub tracer: TracerArgs,

    /// Refresh period (e.g. 500ms, 2s).
    #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Also time sleeps on a full send buffer and each write's ACK. Uses every hook
    /// streaming does, so it costs about as much as streaming.
    #[arg(long)]
    pub full: bool,

    /// One snapshot per interval on stdout instead of the screen (the default when stdout
    /// is not a terminal), like `top -b`.
    #[arg(short, long)]
    pub batch: bool,

    /// One JSON object per interval instead of text (implies --batch; fields in
    /// docs/top.md).
    #[arg(long)]
    pub json: bool,

    /// Exit after N refreshes.
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,

    /// The column rows are sorted by, largest first.
    #[arg(long, value_enum, default_value_t = crate::top::SortBy::Send)]
    pub sort: crate::top::SortBy,

    /// Rows shown at most per refresh (the totals line counts them all).
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub rows: usize,

    #[command(flatten)]
    pub bounds: BoundArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    #[command(flatten)]
    pub tracer: TracerArgs,

    /// Address to serve /metrics on: loopback unless another is given.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9470")]
    pub listen: std::net::SocketAddr,

    /// Labels the counts are grouped by (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "comm,container"
    )]
    pub group_by: Vec<crate::export::GroupBy>,

    /// The kubelet's pod log directory, whose `<namespace>_<name>_<uid>` entries name the pods
    /// (`--group-by pod`); in a container, mount the host's there read-only.
    #[arg(long, value_name = "DIR", default_value = "/var/log/pods")]
    pub pod_logs: std::path::PathBuf,

    /// Label sets at most; sockets past it are counted under one set whose labels are all
    /// "(other)" (and in sockbuf_series_overflow_total).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_series: u32,

    /// How often the kernel's counts are read (a scrape sees them as of the last read).
    #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Also time sleeps on a full send buffer. Uses every hook streaming does, so it costs
    /// about as much as streaming.
    #[arg(long)]
    pub full: bool,

    /// Turn the kernel's run-time accounting of BPF programs on while sockbuf runs, for
    /// sockbuf_bpf_run_seconds_total (it adds two clock reads to every program run; without
    /// it the figure is counted only when kernel.bpf_stats_enabled is 1).
    #[arg(long)]
    pub bpf_stats: bool,

    #[command(flatten)]
    pub bounds: BoundArgs,
}
