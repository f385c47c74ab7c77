//! `sockbuf check`: what this kernel allows, backend by backend, by loading the real programs
//! (so the kernel's verifier checks them) and attaching them, then unloading everything.

use std::io::Write;

use trace_common::Filter;

use crate::{
    attach,
    loader::{self, LoadOptions},
    preflight::{self, Mount},
};

/// Prints one line (or JSON object) per backend; `Ok(false)` when none can attach.
pub fn run(json: bool) -> anyhow::Result<bool> {
    preflight::check_privileges()?;
    let _tracefs = Mount::tracefs()?;
    let opts = LoadOptions {
        filter: Filter::default(),
        attach: attach::AttachMode::Auto,
        ring_bytes: 1 << 16,
        kernel_log: false,
        aggregate: trace_common::agg::Level::Off,
        max_sockets: 1,
        stacks: trace_common::stacks::OFF,
        max_stacks: 1,
    };
    // The programs as `trace` would attach them here, copies or not.
    let standby = preflight::programs_preemptible();
    let mut ebpf = loader::load_object(&opts, standby)?;
    let checks = attach::check_all(&mut ebpf, standby);
    let mut out = std::io::stdout().lock();
    for c in &checks {
        if json {
            serde_json::to_writer(&mut out, c)?;
            writeln!(out)?;
        } else {
            let verdict = match (c.verified, c.attached) {
                (_, true) => "works",
                (true, false) => "verifies, cannot attach",
                (false, _) => "refused",
            };
            let why = c
                .why
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            writeln!(out, "{:<11} {verdict}{why}", c.attach)?;
        }
    }
    Ok(checks.iter().any(|c| c.attached))
}
