//! The tables: medians per configuration, ratios to untraced, kernel time per program.

use super::{BenchArgs, Config, measure::Run};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The main table (timings from the timed `runs`, kernel time from the `accounted` ones) and
/// the per-program tables.
pub fn report(configs: &[Config], runs: &[Run], accounted: &[Run], a: &BenchArgs) -> String {
    let of = |c: Config| runs.iter().filter(move |r| r.config == c);
    let base = median(of(Config::Untraced).map(|r| r.ns_per_write).collect());
    let cpu_per_write = |r: &Run| (r.workload_cpu_ms + r.cpu_ms) * 1e6 / r.writes as f64;
    let cpu_base = median(of(Config::Untraced).map(cpu_per_write).collect());
    let mut t = format!(
        "{} rounds of {} writes of {} B on {} connection(s); medians. Timed with the kernel's \
         BPF run-time accounting off; the BPF columns are medians of {} more runs of each \
         configuration with it on.\n\n\
         | configuration | ns/write | vs untraced | added | CPU ns/write (workload + tracer) | CPU vs untraced | events/s | events | lost | tracer CPU ms (during the run) | tracer peak RSS MiB | BPF ns/write (in the kernel) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        a.rounds,
        a.writes * a.conns as u64,
        a.size,
        a.conns,
        a.accounted.max(1)
    );
    for &c in configs {
        let ns = median(of(c).map(|r| r.ns_per_write).collect());
        let opt = |f: fn(&Run) -> Option<u64>| {
            let v: Vec<f64> = of(c).filter_map(f).map(|x| x as f64).collect();
            if v.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.0}", median(v))
            }
        };
        let cpu = median(of(c).map(cpu_per_write).collect());
        let eps = median(
            of(c)
                .filter_map(|r| r.events.map(|e| e as f64 / r.elapsed_s))
                .collect(),
        );
        t.push_str(&format!(
            "| {} | {ns:.0} | {:.2}× | {:+.1} % | {cpu:.0} | {:.2}× | {} | {} | {} | {:.0} | {:.1} | {:.0} |\n",
            c.name(),
            ns / base,
            (ns / base - 1.0) * 100.0,
            cpu / cpu_base,
            if c == Config::Untraced || eps == 0.0 { "-".to_owned() } else { format!("{eps:.0}") },
            opt(|r| r.events),
            opt(|r| r.lost),
            median(of(c).map(|r| r.cpu_ms).collect()),
            median(of(c).map(|r| r.rss_kib as f64).collect()) / 1024.0,
            median(
                accounted
                    .iter()
                    .filter(|r| r.config == c)
                    .map(|r| r.bpf_ns as f64 / r.writes as f64)
                    .collect()
            ),
        ));
    }
    t.push_str(&paired(configs, runs));
    for c in [
        Config::SockbufStream,
        Config::SockbufStreamRaw,
        Config::SockbufSummary,
        Config::SockbufFull,
    ] {
        t.push_str(&by_program(c, accounted, a));
    }
    t
}

/// Where sockbuf's kernel time per write goes in configuration `config`: per program (kernel
/// names, `sb_…` the standby copies), medians over the accounted runs.
fn by_program(config: Config, accounted: &[Run], a: &BenchArgs) -> String {
    let stream: Vec<&Run> = accounted.iter().filter(|r| r.config == config).collect();
    let mut names: Vec<&str> = stream
        .iter()
        .flat_map(|r| r.by_program.iter().map(|(n, ..)| n.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let per_write = |name: &str, f: fn(u64, u64) -> f64| {
        median(
            stream
                .iter()
                .filter_map(|r| {
                    let (_, ns, runs) = r.by_program.iter().find(|(n, ..)| n == name)?;
                    Some(f(*ns, *runs) / r.writes as f64)
                })
                .collect(),
        )
    };
    let mut rows: Vec<(f64, String)> = names
        .into_iter()
        .map(|n| {
            let ns = per_write(n, |ns, _| ns as f64);
            let runs = per_write(n, |_, runs| runs as f64);
            let per_run = if runs > 0.0 { ns / runs } else { 0.0 };
            (
                ns,
                format!("| {n} | {runs:.2} | {per_run:.0} | {ns:.0} |\n"),
            )
        })
        .collect();
    rows.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut t = format!(
        "\n{}, kernel time by program (kernel names, cut at 15 bytes; `sb_…`: standby copies; {} B writes):\n\n\
         | program | runs per write | ns per run | ns per write |\n| --- | ---: | ---: | ---: |\n",
        config.name(),
        a.size
    );
    for (_, row) in rows {
        t.push_str(&row);
    }
    t
}

/// Configurations set against their floors round by round: within a round the runs follow
/// each other closely, so the machine's slower and faster spells (which move a configuration's
/// median by several points between runs of the bench) weigh on both sides of a difference.
const PAIRS: [(Config, Config); 7] = [
    (Config::SockbufSummary, Config::FloorSummary),
    // What the summary adds to the least a per-socket count can do, and to the least
    // `--summary` itself can do.
    (Config::SockbufSummary, Config::FloorCountSk),
    (Config::SockbufSummary, Config::FloorCountSummary),
    (Config::SockbufTop, Config::FloorSummary),
    (Config::FloorCountSk, Config::FloorSummary),
    (Config::FloorCountSummary, Config::FloorSummary),
    (Config::SockbufStream, Config::FloorStream),
];

/// Each pair's points over its floor per round (each run against its round's untraced one):
/// the median, the quartiles, and each round's.
fn paired(configs: &[Config], runs: &[Run]) -> String {
    let at = |c: Config, round: usize| {
        runs.iter()
            .find(|r| r.config == c && r.round == round)
            .map(|r| r.ns_per_write)
    };
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(0);
    let mut t = String::new();
    for (c, floor) in PAIRS {
        if !configs.contains(&c) || !configs.contains(&floor) {
            continue;
        }
        let points: Vec<f64> = (1..=rounds)
            .filter_map(|r| {
                let base = at(Config::Untraced, r)?;
                Some((at(c, r)? - at(floor, r)?) / base * 100.0)
            })
            .collect();
        if t.is_empty() {
            t.push_str(
                "\nPaired by round: a configuration's added time minus its floor's, in points of \
                 that round's untraced write (median, quartiles; then every round's).\n\n\
                 | configuration | its floor | points over it | quartiles | rounds |\n\
                 | --- | --- | ---: | ---: | --- |\n",
            );
        }
        let mut sorted = points.clone();
        sorted.sort_by(f64::total_cmp);
        let q = |f: f64| sorted.get(((sorted.len() as f64 - 1.0) * f).round() as usize);
        let (q1, q3) = (
            q(0.25).copied().unwrap_or(0.0),
            q(0.75).copied().unwrap_or(0.0),
        );
        let each: Vec<String> = points.iter().map(|p| format!("{p:+.1}")).collect();
        t.push_str(&format!(
            "| {} | {} | {:+.1} | {q1:+.1} … {q3:+.1} | {} |\n",
            c.name(),
            floor.name(),
            median(points),
            each.join(" ")
        ));
    }
    t
}
