//! Verdicts per kernel and attach mode, and the tables: kernels × modes, each test binary's
//! counts and time, and every failure's details.

use std::fmt::Write as _;

use super::guest_log::{BinaryRun, GuestLog};

/// A test binary's exit code when /init's time limit stopped it (SIGTERM).
const STOPPED: i32 = 143;

/// One kernel × attach mode.
pub struct Cell {
    pub kernel: String,
    pub mode: String,
    pub verdict: Verdict,
    /// Boot to shell, for the guest this mode ran in.
    pub boot_secs: Option<f64>,
    /// The mode's test binaries, added up.
    pub secs: f64,
}

pub enum Verdict {
    Pass,
    /// The kernel lacks a tracepoint the backend needs, and sockbuf said so as it should.
    Refused(String),
    Fail(String),
}

/// What `--attach tracepoint` (and `tp_btf`, on the same tracepoints) should do on the
/// kernels it was measured on: Debian's 6.1 lacks
/// sock_send_length (and sock_recv_length, tcp_sendmsg_locked), so it must be refused naming
/// it; 6.12 lacks only tcp_sendmsg_locked, which the backend's syscall-entry form replaces;
/// 7.3 has all. None: not known, take what the guest finds.
fn expected_refusal(kernel: &str) -> Option<Option<&'static str>> {
    match kernel {
        "6.1" => Some(Some("sock/sock_send_length")),
        "6.12" | "7.3" => Some(None),
        _ => None,
    }
}

/// Judges each of `modes` on `kernel` from the guest's log; `binaries` says how many test
/// binaries a mode should have run.
pub fn judge(
    kernel: &str,
    modes: &[String],
    log: &GuestLog,
    binaries: impl Fn(&str) -> usize,
) -> Vec<Cell> {
    modes
        .iter()
        .map(|mode| {
            let runs: Vec<_> = log.runs.iter().filter(|r| &r.mode == mode).collect();
            let secs = runs.iter().map(|r| r.secs).sum();
            let verdict = ModeRun {
                kernel,
                mode,
                log,
                runs,
                binaries: binaries(mode),
                died: log.died.as_deref(),
            }
            .verdict();
            Cell {
                kernel: kernel.to_owned(),
                mode: mode.clone(),
                verdict,
                boot_secs: log.boot_secs,
                secs,
            }
        })
        .collect()
}

/// One attach mode's part of a guest's log, to judge.
struct ModeRun<'a> {
    kernel: &'a str,
    mode: &'a str,
    log: &'a GuestLog,
    /// The mode's test binaries that reported.
    runs: Vec<&'a BinaryRun>,
    /// How many should have.
    binaries: usize,
    /// Why the guest hung or crashed, if it did.
    died: Option<&'a str>,
}

impl ModeRun<'_> {
    fn verdict(&self) -> Verdict {
        let Self {
            kernel,
            mode,
            log,
            ref runs,
            died,
            ..
        } = *self;
        // A guest that hung or crashed fails all its modes: whatever passed before may be what
        // broke it (a backend's detach, say).
        if let Some(d) = died
            && runs.iter().all(|r| r.rc == Some(0))
        {
            return Verdict::Fail(d.to_owned());
        }
        let refusal = log.refusals.iter().find(|r| r.mode == mode);
        let expected = if mode == "tracepoint" || mode == "tp_btf" {
            expected_refusal(kernel)
        } else {
            Some(None)
        };
        match (refusal, expected) {
            (Some(r), Some(Some(_)) | None) => {
                let tp = expected.flatten().or(r.missing.first().map(String::as_str));
                let Some(tp) = tp else {
                    return Verdict::Fail(format!(
                        "refused, naming no missing tracepoint: {}",
                        r.message
                    ));
                };
                let named = r.message.contains(&format!("no tracepoint {tp}"));
                if r.rc == 2 && named && r.message.lines().count() == 1 {
                    Verdict::Refused(tp.to_owned())
                } else {
                    Verdict::Fail(format!(
                        "expected exit 2 naming {tp}; got exit {}: {}",
                        r.rc, r.message
                    ))
                }
            }
            (Some(r), Some(None)) => Verdict::Fail(format!(
                "refused (missing {}), but this kernel has them: {}",
                r.missing.join(", "),
                r.message
            )),
            (None, Some(Some(tp))) if died.is_none() => Verdict::Fail(format!(
                "expected a refusal for the missing tracepoint {tp}"
            )),
            (None, _) => self.ran(),
        }
    }

    /// The mode ran its tests (no refusal): every binary passed, all of them ran, and `auto`
    /// picked fentry.
    fn ran(&self) -> Verdict {
        let Self {
            mode,
            log,
            ref runs,
            binaries,
            died,
            ..
        } = *self;
        let failed: Vec<String> = runs
            .iter()
            .filter(|r| r.rc != Some(0))
            .map(|r| {
                let open = r
                    .open_test
                    .as_deref()
                    .map(|t| format!(", in {t}"))
                    .unwrap_or_default();
                match r.rc {
                    Some(STOPPED) => format!("{} (stopped at the time limit{open})", r.name),
                    Some(rc) => format!("{} ({} failed, exit {rc})", r.name, r.failed),
                    None => format!("{} (did not finish{open})", r.name),
                }
            })
            .collect();
        if !failed.is_empty() {
            let why = died.map(|d| format!("; {d}")).unwrap_or_default();
            return Verdict::Fail(format!("{}{why}", failed.join(", ")));
        }
        if runs.len() < binaries {
            let why = died.unwrap_or("the guest skipped some");
            return Verdict::Fail(format!(
                "{} of {binaries} test binaries ran: {why}",
                runs.len()
            ));
        }
        if mode == "auto" {
            let picked = log.picked.as_deref().unwrap_or("nothing");
            if !picked.contains(r#""attach":"fentry""#) {
                return Verdict::Fail(format!(
                    "--attach auto must pick fentry; it started {picked}"
                ));
            }
        }
        Verdict::Pass
    }
}

impl Cell {
    fn text(&self) -> String {
        match &self.verdict {
            Verdict::Pass => format!("pass ({:.0} s)", self.secs),
            Verdict::Refused(tp) => format!("refused (missing tracepoint {tp})"),
            Verdict::Fail(_) => format!("FAIL ({:.0} s)", self.secs),
        }
    }
}

/// Markdown: the kernels × modes table, each binary's counts and time, the failures.
pub fn markdown(cells: &[Cell], logs: &[(String, String, &GuestLog)]) -> String {
    let mut modes: Vec<&str> = Vec::new();
    let mut kernels: Vec<&str> = Vec::new();
    for c in cells {
        if !modes.contains(&c.mode.as_str()) {
            modes.push(&c.mode);
        }
        if !kernels.contains(&c.kernel.as_str()) {
            kernels.push(&c.kernel);
        }
    }
    let mut s = String::from("# vm-test results\n\n| kernel | boot |");
    for m in &modes {
        let _ = write!(s, " {m} |");
    }
    s.push_str("\n| --- | --- |");
    s.push_str(&" --- |".repeat(modes.len()));
    for k in &kernels {
        let mine: Vec<&Cell> = cells.iter().filter(|c| c.kernel == *k).collect();
        let boot = mine.iter().filter_map(|c| c.boot_secs).reduce(f64::max);
        let boot = boot.map_or("-".to_owned(), |b| format!("{b:.1} s"));
        let _ = write!(s, "\n| {k} | {boot} |");
        for m in &modes {
            let cell = mine.iter().find(|c| c.mode == *m);
            let _ = write!(s, " {} |", cell.map_or("-".to_owned(), |c| c.text()));
        }
    }
    s.push_str(
        "\n\nBoot: power-on to /init's first line (the slowest boot of a kernel's guests).\n",
    );
    s.push_str("\n## Test binaries\n\n| kernel | mode | binary | passed | failed | exit | time |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for (kernel, release, log) in logs {
        for r in &log.runs {
            let rc = r.rc.map_or("-".to_owned(), |rc| rc.to_string());
            let _ = writeln!(
                s,
                "| {kernel} ({release}) | {} | {} | {} | {} | {rc} | {:.1} s |",
                r.mode, r.name, r.passed, r.failed, r.secs
            );
        }
    }
    let fails: Vec<&Cell> = cells
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Fail(_)))
        .collect();
    if !fails.is_empty() {
        s.push_str("\n## Failures\n");
        for c in fails {
            if let Verdict::Fail(why) = &c.verdict {
                let _ = writeln!(s, "\n- **{} {}**: {why}", c.kernel, c.mode);
            }
        }
        for (kernel, _, log) in logs {
            for r in log.runs.iter().filter(|r| r.rc != Some(0)) {
                let _ = write!(s, "\n### {kernel} {} {}\n\n```\n", r.mode, r.name);
                for l in r.detail.iter().take(80) {
                    let _ = writeln!(s, "{l}");
                }
                s.push_str("```\n");
            }
            if log.died.is_some() || !log.warnings.is_empty() {
                let _ = write!(s, "\n### {kernel}: last console lines\n\n```\n");
                for l in &log.tail {
                    let _ = writeln!(s, "{l}");
                }
                s.push_str("```\n");
            }
        }
    }
    s
}
