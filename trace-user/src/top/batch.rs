//! `top --batch`: one snapshot per refresh on stdout, as text (`top -b`'s way) or one JSON
//! object per line, until Ctrl-C, SIGTERM or `-n` refreshes.

use std::io::Write as _;

use anyhow::Context as _;

use super::{Engine, Snapshot, cells};
use crate::{cli::TopArgs, stop};

pub async fn run(mut engine: Engine, args: &TopArgs) -> anyhow::Result<()> {
    let stop = stop::stop_on(None, std::future::pending());
    tokio::pin!(stop);
    let mut out = std::io::stdout().lock();
    if args.json {
        // As `trace --json` begins: the programs are attached from here on.
        let start = serde_json::json!({
            "kind": "start",
            "attach": engine.session.tracer().mode.name(),
            "pid": std::process::id(),
        });
        writeln!(out, "{start}")?;
        out.flush()?;
    }
    let mut done = 0;
    loop {
        tokio::select! {
            r = engine.until_refresh() => r?,
            () = &mut stop => break,
        }
        let mut snap = engine.refresh(args.sort, false)?;
        snap.rows.truncate(args.rows);
        let r = if args.json {
            serde_json::to_writer(&mut out, &snap)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
        } else {
            write_text(&mut out, &snap)
        };
        match r.and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`| head`): done, quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing to stdout"),
        }
        done += 1;
        if args.iterations.is_some_and(|n| done >= n) {
            break;
        }
    }
    Ok(())
}

fn write_text(out: &mut impl std::io::Write, s: &Snapshot) -> std::io::Result<()> {
    writeln!(
        out,
        "sockbuf top - {} - every {:.2}s, sorted by {:?} - lost {} faults {} missed {} - {}{}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        s.interval_s,
        s.sort,
        s.lost,
        s.faults,
        s.missed,
        s.attach,
        if s.full { ", --full" } else { "" },
    )?;
    writeln!(out, "{}", cells::totals(&s.totals))?;
    writeln!(out, "{}", cells::header())?;
    for r in &s.rows {
        writeln!(out, "{}", cells::row(r))?;
    }
    writeln!(out)
}
