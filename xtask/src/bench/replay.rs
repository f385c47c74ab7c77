//! The consumer alone: a streaming run's ring-buffer records are recorded (`sockbuf trace
//! --record`), then fed again through decoding, ACK matching and each output by `sockbuf
//! replay`, without the kernel: events per second one core handles, per output.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{BenchArgs, COMM, measure};
use crate::cmd;

/// One output's figures.
pub struct Replayed {
    pub output: &'static str,
    pub events: u64,
    pub events_per_s: f64,
    /// The output file alone: its bytes written again with nothing to make (json, text).
    pub sink_events_per_s: Option<f64>,
}

const OUTPUTS: [&str; 3] = ["json", "text", "summary"];

/// Records a streaming run of the workload, then replays it through each output.
pub fn run(
    a: &BenchArgs,
    sockbuf: &Path,
    workload: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<Replayed>> {
    let rec = dir.join("replay.rec");
    let mut tracer = Command::new(sockbuf);
    tracer
        .args(["trace", "--json", "-c", COMM, "--record"])
        .arg(&rec);
    measure::record_run(tracer, a, workload, &dir.join("tracer.out"))?;
    OUTPUTS
        .iter()
        .map(|&output| {
            let out = cmd::output(
                Command::new(sockbuf)
                    .args(["replay", "--output", output, "--to"])
                    .arg(dir.join("replay.out"))
                    .arg(&rec),
            );
            let v: Value = serde_json::from_str(out.trim())
                .with_context(|| format!("sockbuf replay --output {output} printed {out:?}"))?;
            let events = v["events"].as_u64().unwrap_or(0);
            if events == 0 {
                bail!("sockbuf replay --output {output}: no events");
            }
            Ok(Replayed {
                output,
                events,
                events_per_s: v["events_per_s"].as_f64().unwrap_or(0.0),
                sink_events_per_s: v["sink_events_per_s"].as_f64(),
            })
        })
        .collect()
}

/// The table: events per second per output.
pub fn table(rows: &[Replayed]) -> String {
    let mut t = String::from(
        "\nThe consumer alone (`sockbuf replay`: a streaming run's records fed again through \
         decoding, ACK matching and the output, one core, no kernel; median of 5 passes; \
         written to a file, whose floor is the same bytes written again with nothing to make):\
         \n\n| output | events | events/s | the file alone, events/s |\n\
         | --- | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let sink = r
            .sink_events_per_s
            .map_or_else(|| "—".to_string(), |s| format!("{s:.0}"));
        t.push_str(&format!(
            "| {} | {} | {:.0} | {sink} |\n",
            r.output, r.events, r.events_per_s
        ));
    }
    t
}
