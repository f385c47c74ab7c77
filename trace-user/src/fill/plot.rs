//! The fill timeline as SVG: send and receive queues, sndbuf, write calls, EAGAINs, blocks.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use super::{
    experiment::{Measured, Sample, SampleKind},
    handler::Traced,
};

/// Series names, as they appear in the legend (and the tests look for them).
pub const SEND_Q: &str = "client send queue (Send-Q)";
pub const RECV_Q: &str = "server receive queue (Recv-Q)";
pub const SNDBUF: &str = "client sk_sndbuf";
pub const WRITES: &str = "write calls";
pub const EAGAIN: &str = "EAGAIN";
pub const BLOCKED: &str = "writer asleep";

pub fn write_svg(path: &Path, m: &Measured, t: &Traced) -> anyhow::Result<()> {
    let ms = |ns: u64| ns.saturating_sub(m.start_ns) as f64 / 1e6;
    let kib = |b: u64| b as f64 / 1024.0;
    let t_end = m.samples.iter().map(|s| ms(s.t_ns)).fold(1.0, f64::max);
    let y_max = m
        .samples
        .iter()
        .flat_map(|s| [s.send_q, s.recv_q])
        .chain(t.sndbuf.iter().map(|&(_, v)| v))
        .max()
        .map_or(1.0, kib)
        * 1.1;

    let root = SVGBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "sockbuf fill: where the accepted bytes are",
            ("sans-serif", 24),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..t_end * 1.02, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since connect (ms)")
        .y_desc("KiB")
        .draw()?;

    for &(s, e) in &t.blocks {
        chart
            .draw_series([Rectangle::new(
                [(ms(s), 0.0), (ms(e), y_max)],
                RGBColor(255, 220, 150).mix(0.5).filled(),
            )])?
            .label(BLOCKED)
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 15, y + 5)],
                    RGBColor(255, 220, 150).filled(),
                )
            });
    }
    let line = |f: fn(&Sample) -> u64| m.samples.iter().map(move |s| (ms(s.t_ns), kib(f(s))));
    chart
        .draw_series(LineSeries::new(line(|s| s.send_q), BLUE.stroke_width(2)))?
        .label(SEND_Q)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(line(|s| s.recv_q), GREEN.stroke_width(2)))?
        .label(RECV_Q)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], GREEN.stroke_width(2)));
    // sk_sndbuf as a step line from the trace, held to the end.
    let mut steps = Vec::new();
    for w in t.sndbuf.windows(2) {
        steps.push((ms(w[0].0), kib(w[0].1)));
        steps.push((ms(w[1].0), kib(w[0].1)));
    }
    if let Some(&(ts, v)) = t.sndbuf.last() {
        steps.push((ms(ts), kib(v)));
        steps.push((t_end, kib(v)));
    }
    chart
        .draw_series(LineSeries::new(steps, RED.stroke_width(1)))?
        .label(SNDBUF)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], RED));
    chart
        .draw_series(
            m.samples
                .iter()
                .filter(|s| s.kind == SampleKind::Write)
                .map(|s| Circle::new((ms(s.t_ns), kib(s.send_q)), 2, BLUE.filled())),
        )?
        .label(WRITES)
        .legend(|(x, y)| Circle::new((x + 7, y), 2, BLUE.filled()));
    chart
        .draw_series(
            m.samples
                .iter()
                .filter(|s| s.kind == SampleKind::Eagain)
                .map(|s| Cross::new((ms(s.t_ns), kib(s.send_q)), 6, RED.stroke_width(2))),
        )?
        .label(EAGAIN)
        .legend(|(x, y)| Cross::new((x + 7, y), 5, RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
