//! `sockbuf export`: the in-kernel counts of `trace --summary`, grouped by label sets
//! (`--group-by`), served at `/metrics` in the OpenMetrics text format for Prometheus. No
//! per-call traffic crosses the ring buffer: at each refresh the counts are read (not
//! taken out), and what each socket gained since the last refresh is added to its label
//! set's counters; a closed socket's last counts come once, when it closes.

mod histogram;
mod labels;
mod metrics;

use std::{
    collections::{HashMap, HashSet},
    future::IntoFuture as _,
    net::SocketAddr,
    sync::Arc,
};

use anyhow::Context as _;
use axum::{
    Router, extract::State, http::header::CONTENT_TYPE, response::IntoResponse, routing::get,
};
pub use labels::GroupBy;
use prometheus_client::registry::Registry;

use crate::{
    cli::ExportArgs, error::SetupError, session::Session, stop, summary::Counts, top, trace,
};

/// OpenMetrics' media type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn serve_metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut body, &registry);
    ([(CONTENT_TYPE, OPENMETRICS)], body)
}

/// Binds the listening socket; a bad or busy address is the user's to fix.
async fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        SetupError::Listen {
            addr,
            why: e.to_string(),
        }
        .into()
    })
}

pub async fn run(args: ExportArgs, verbose: u8) -> anyhow::Result<()> {
    let listener = listen(args.listen).await?;
    // Held open for the run: the kernel accounts run time while any such fd is open.
    let _stats = args
        .bpf_stats
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime))
        .transpose()
        .context("turning the kernel's BPF statistics on (--bpf-stats)")?;
    let (mut session, mut summary) =
        trace::start_counting(&args.filter, &args.tracer, &args.bounds, args.full, verbose)?;
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(Arc::new(registry));
    log::info!("serving OpenMetrics at http://{}/metrics", args.listen);
    let stop = stop::stop_on(None, std::future::pending());
    tokio::pin!(stop);
    let server = axum::serve(listener, app).into_future();
    tokio::pin!(server);
    let mut grouping =
        labels::Grouping::new(&args.group_by, args.max_series as usize, &args.pod_logs);
    let mut before: HashMap<u64, Counts> = HashMap::new();
    let mut refresh = tokio::time::interval(args.interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = session.step(&mut summary) => r?,
            _ = refresh.tick() => {
                session.drain_now(&mut summary);
                update(&session, &mut summary, &mut grouping, &mut before, &metrics)?;
            }
            r = &mut server => return r.context("serving /metrics"),
            () = &mut stop => break,
        }
    }
    Ok(())
}

/// One refresh: what every socket gained goes to its label set's counters.
fn update(
    session: &Session,
    summary: &mut crate::summary::Summary,
    grouping: &mut labels::Grouping,
    before: &mut HashMap<u64, Counts>,
    metrics: &metrics::Metrics,
) -> anyhow::Result<()> {
    let table = top::socket_table();
    let mut now = HashMap::with_capacity(before.len());
    let mut queues: HashMap<labels::Labels, (u32, u32)> = HashMap::new();
    let mut pids = HashSet::new();
    for s in summary.peek()? {
        let earlier = before.remove(&s.sock_id).unwrap_or_default();
        let labels = grouping.labels(&s);
        metrics.add(&labels, &s.counts.minus(&earlier));
        pids.insert(s.pid);
        if s.closed {
            continue;
        }
        if let Some(d) = table.get(&s.ino).or_else(|| table.get(&s.sock_id)) {
            let q = queues.entry(labels).or_default();
            *q = (q.0.max(d.send_q), q.1.max(d.recv_q));
        }
        now.insert(s.sock_id, s.counts);
    }
    // Sockets gone without a close seen keep what they counted; their entries go.
    *before = now;
    grouping.keep_places(&pids);
    metrics.queues(&queues);
    let k = session.counters()?;
    let (run_time, runs) = session.tracer().run_time();
    metrics.health(&metrics::Health {
        lost: k.lost,
        faults: k.faults,
        missed: k.missed,
        overflowed: grouping.overflowed,
        programs: session.tracer().loaded_programs() as i64,
        bpf_run_ns: run_time.as_nanos() as u64,
        bpf_runs: runs,
    });
    Ok(())
}
