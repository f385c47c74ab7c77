//! Reads a guest's console: the `VMTEST:` markers /init prints around each step, and between
//! them the test binaries' own output (`test … FAILED`, `test result: …`, failure details).

use std::time::Duration;

use crate::test::parse_result;

/// One test binary run in one attach mode.
pub struct BinaryRun {
    pub mode: String,
    pub name: String,
    /// None: the guest never got to the end of it.
    pub rc: Option<i32>,
    pub secs: f64,
    pub passed: u64,
    pub failed: u64,
    /// The test libtest had started but not finished when the binary ended.
    pub open_test: Option<String>,
    /// Console lines of libtest's failure report (`---- name stdout ----` and the panic),
    /// and of sockbuf's stderr, which the tests pass through.
    pub detail: Vec<String>,
}

/// `--attach tracepoint` where the kernel lacks one of its tracepoints.
pub struct Refusal {
    pub mode: String,
    pub rc: i32,
    pub missing: Vec<String>,
    pub message: String,
}

/// What one guest did.
#[derive(Default)]
pub struct GuestLog {
    pub release: Option<String>,
    pub boot_secs: Option<f64>,
    pub runs: Vec<BinaryRun>,
    pub refusals: Vec<Refusal>,
    /// The `start` object of `sockbuf trace` with --attach auto.
    pub picked: Option<String>,
    pub warnings: Vec<String>,
    /// Why the guest did not finish, when it did not (set by whoever booted it).
    pub died: Option<String>,
    /// The last console lines, for a guest that died or hung.
    pub tail: Vec<String>,
    started: Option<Duration>,
    /// `failures:` headers seen in the current run: libtest prints one before the details
    /// and one before the list of names.
    failure_headers: u8,
}

impl GuestLog {
    /// Takes one console line; returns a progress message for the markers worth one.
    pub fn feed(&mut self, at: Duration, line: &str) -> Option<String> {
        self.tail.push(line.to_owned());
        if self.tail.len() > 40 {
            self.tail.remove(0);
        }
        // The firmware's terminal resets can share the first marker's line.
        let Some(marker) = line.find("VMTEST:").map(|i| line[i + 7..].trim()) else {
            self.binary_output(line);
            return None;
        };
        let (word, rest) = marker.split_once(' ').unwrap_or((marker, ""));
        match word {
            "boot" => {
                self.release = Some(rest.to_owned());
                self.boot_secs = Some(at.as_secs_f64());
                Some(format!("booted {rest} in {:.1} s", at.as_secs_f64()))
            }
            "run" => {
                let (mode, name) = rest.split_once(' ').unwrap_or((rest, ""));
                self.started = Some(at);
                self.failure_headers = 0;
                self.runs.push(BinaryRun {
                    mode: mode.to_owned(),
                    name: name.to_owned(),
                    rc: None,
                    secs: 0.0,
                    passed: 0,
                    failed: 0,
                    open_test: None,
                    detail: Vec::new(),
                });
                None
            }
            "exit" => {
                let rc = rest.rsplit(' ').next().and_then(|r| r.parse().ok());
                let started = self.started.take().unwrap_or(at);
                let run = self.runs.last_mut()?;
                run.rc = rc;
                run.secs = (at - started).as_secs_f64();
                Some(format!(
                    "{} {}: {} passed, {} failed, exit {} ({:.1} s)",
                    run.mode,
                    run.name,
                    run.passed,
                    run.failed,
                    rc.map_or("?".to_owned(), |r| r.to_string()),
                    run.secs
                ))
            }
            "refused" => {
                // `MODE rc=N missing=A,B MESSAGE`
                let mut f = rest.splitn(4, ' ');
                let mode = f.next().unwrap_or_default().to_owned();
                let rc = f.next().and_then(|r| r.strip_prefix("rc=")?.parse().ok());
                let missing = f.next().and_then(|m| m.strip_prefix("missing="));
                let message = f.next().unwrap_or_default().to_owned();
                self.refusals.push(Refusal {
                    mode: mode.clone(),
                    rc: rc.unwrap_or(-1),
                    missing: missing
                        .unwrap_or_default()
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    message: message.clone(),
                });
                Some(format!("{mode}: exit {} {message}", rc.unwrap_or(-1)))
            }
            "picked" => {
                self.picked = Some(rest.to_owned());
                Some(format!("auto: {rest}"))
            }
            "warn" => {
                self.warnings.push(rest.to_owned());
                Some(format!("warning: {rest}"))
            }
            _ => None,
        }
    }

    /// A line from inside a test binary's run.
    fn binary_output(&mut self, line: &str) {
        let Some(run) = self.runs.last_mut().filter(|r| r.rc.is_none()) else {
            return;
        };
        if let Some((p, f)) = parse_result(line) {
            run.passed = p;
            run.failed = f;
            return;
        }
        // `test NAME ... ` is printed when a test starts, `ok` or `FAILED` when it ends (on
        // the same line, unless a child's stderr came between).
        if let Some((name, result)) = line
            .strip_prefix("test ")
            .and_then(|l| l.split_once(" ... "))
        {
            let done = ["ok", "FAILED", "ignored"].contains(&result.trim());
            run.open_test = (!done).then(|| name.to_owned());
        } else if ["ok", "FAILED"].contains(&line.trim()) {
            run.open_test = None;
        }
        if line.trim() == "failures:" {
            self.failure_headers += 1;
            return;
        }
        let from_sockbuf = line.starts_with("sockbuf") || line.starts_with("Error:");
        if self.failure_headers == 1 || from_sockbuf || line.ends_with("... FAILED") {
            run.detail.push(line.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::GuestLog;

    #[test]
    fn reads_markers_counts_and_failures() {
        let mut log = GuestLog::default();
        let console = [
            "\u{1b}c\u{1b}[?7lVMTEST:boot 6.1.0-56-cloud-amd64",
            "VMTEST:run kprobe backends",
            "test a ... ok",
            "test b ... FAILED",
            "failures:",
            "---- b stdout ----",
            "assertion `left == right` failed",
            "failures:",
            "    b",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            "VMTEST:exit kprobe backends 101",
            "VMTEST:run kprobe trace_send",
            "test bad_input ... ",
            "VMTEST:exit kprobe trace_send 143",
            "VMTEST:refused tracepoint rc=2 missing=tcp/tcp_sendmsg_locked,sock/sock_send_length sockbuf: error: no",
        ];
        for (i, line) in console.iter().enumerate() {
            log.feed(Duration::from_secs(i as u64), line);
        }
        assert_eq!(log.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        let (a, b) = (&log.runs[0], &log.runs[1]);
        assert_eq!((a.rc, a.passed, a.failed), (Some(101), 1, 1));
        assert!(
            a.detail
                .contains(&"assertion `left == right` failed".to_owned())
        );
        assert!(
            !a.detail.contains(&"    b".to_owned()),
            "the name list is not detail"
        );
        assert_eq!(
            (b.rc, b.open_test.as_deref()),
            (Some(143), Some("bad_input"))
        );
        let r = &log.refusals[0];
        assert_eq!((r.rc, r.missing.len()), (2, 2));
        assert_eq!(r.message, "sockbuf: error: no");
    }
}
