//! `sockbuf replay` (hidden, for `cargo xtask bench`): ring-buffer records that `trace
//! --record` wrote, fed again through decoding, ACK matching and one output, without the
//! kernel, so that the consumer's own cost per event is measured alone.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use trace_common::user::Event;

use crate::{
    cli::{ReplayArgs, ReplayOutput},
    output,
    session::EventHandler,
    summary::Summary,
    trace::Printer,
};

/// Writes each record as `trace --record` keeps it: its length (u32, little-endian), then
/// its bytes.
pub struct Recorder(BufWriter<File>);

impl Recorder {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(BufWriter::with_capacity(1 << 20, f)))
    }

    pub fn record(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.0.write_all(&(raw.len() as u32).to_le_bytes())?;
        self.0.write_all(raw)
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Every record of a file `trace --record` wrote.
fn read_records(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::new(f);
    let mut records = Vec::new();
    let mut len = [0u8; 4];
    loop {
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e).context("reading records"),
        }
        let mut rec = vec![0u8; u32::from_le_bytes(len) as usize];
        r.read_exact(&mut rec).context("a record cut short")?;
        records.push(rec);
    }
    Ok(records)
}

/// One pass over `records` into `handler`, batched as the ring buffer's reader drains them.
fn pass<H: EventHandler>(records: &[Vec<u8>], handler: &mut H) -> u64 {
    const BATCH: usize = 4096;
    let mut events = 0;
    for batch in records.chunks(BATCH) {
        for raw in batch {
            if let Ok(ev) = Event::parse(raw) {
                handler.on_event(&ev);
                events += 1;
            }
        }
        handler.on_batch_end();
    }
    events
}

fn sink(to: &Option<PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    let path = to.clone().unwrap_or_else(|| PathBuf::from("/dev/null"));
    let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(Box::new(BufWriter::with_capacity(1 << 16, f)))
}

pub fn run(args: ReplayArgs) -> anyhow::Result<bool> {
    let records = read_records(&args.file)?;
    anyhow::ensure!(!records.is_empty(), "{}: no records", args.file.display());
    let mut times = Vec::new();
    let mut events = 0;
    for _ in 0..times_len(args.passes) {
        // Opened before the clock starts: creating it truncates the previous pass's output,
        // which the kernel frees page by page (a tenth of a pass's time, not the consumer's).
        let mut to = sink(&args.to)?;
        let start = Instant::now();
        events = match args.output {
            ReplayOutput::Json | ReplayOutput::Text => {
                let out = output::new_output(args.output == ReplayOutput::Json, to, 0, true);
                let mut printer = Printer::new(out);
                let n = pass(&records, &mut printer);
                printer.out.flush()?;
                n
            }
            ReplayOutput::Summary => {
                let mut summary = Summary::new(true, args.bounds.summary(), None);
                let n = pass(&records, &mut summary);
                summary.finish(0)?;
                summary.write(&mut to, true)?;
                to.flush()?;
                n
            }
        };
        times.push(start.elapsed().as_secs_f64());
    }
    let median = median(times);
    let sink_s = match (&args.to, args.output) {
        (Some(_), ReplayOutput::Json | ReplayOutput::Text) => Some(sink_alone(&args)?),
        _ => None,
    };
    println!(
        "{}",
        serde_json::json!({
            "output": args.output.name(),
            "records": records.len(),
            "events": events,
            "passes": times_len(args.passes),
            "median_s": median,
            "events_per_s": events as f64 / median,
            // The same bytes written again with nothing to make: what the file alone allows.
            "sink_median_s": sink_s,
            "sink_events_per_s": sink_s.map(|s| events as f64 / s),
        })
    );
    Ok(true)
}

fn times_len(passes: u32) -> u32 {
    passes.max(1)
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The floor the output file sets: the last pass's bytes written to it again, in the chunks
/// the output hands over, with nothing to decode or format (median of as many passes).
fn sink_alone(args: &ReplayArgs) -> anyhow::Result<f64> {
    let path = args.to.as_ref().expect("a file to write");
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut times = Vec::new();
    for _ in 0..times_len(args.passes) {
        let mut to = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let start = Instant::now();
        for chunk in bytes.chunks(output::CHUNK) {
            to.write_all(chunk)?;
        }
        to.flush()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(times))
}
