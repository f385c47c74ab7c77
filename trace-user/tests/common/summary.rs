//! `sockbuf trace --json --summary`, run as a test's reference would run it.

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;

use super::SOCKBUF;

/// `sockbuf trace --json --summary ARGS`, started and attached.
pub struct SummaryRun {
    pub child: Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// The backend it attached with (the start object's `attach`).
    pub attach: String,
}

/// A test that failed before stopping it must not leave it running.
impl Drop for SummaryRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SummaryRun {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(SOCKBUF)
            .args(["trace", "--json", "--summary"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sockbuf");
        // The start object comes once the programs are attached (seconds in an emulated guest).
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut start = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut start).expect("read the start object");
        assert!(start.contains("\"start\""), "no start object: {start:?}");
        let start: Value = serde_json::from_str(&start).expect("the start object");
        let attach = start["attach"].as_str().expect("attach").to_owned();
        Self {
            child,
            stdout,
            attach,
        }
    }

    /// Stops it as Ctrl-C would: (the summary's sockets, the end object).
    pub fn stop(self) -> (Vec<Value>, Value) {
        let (summary, end) = self.stop_whole();
        (summary["sockets"].as_array().expect("sockets").clone(), end)
    }

    /// Stops it as Ctrl-C would: (the summary object, the end object).
    pub fn stop_whole(mut self) -> (Value, Value) {
        thread::sleep(Duration::from_millis(200));
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut rest = String::new();
        self.stdout
            .read_to_string(&mut rest)
            .expect("read sockbuf's output");
        let status = self.child.wait().expect("wait sockbuf");
        assert!(status.success(), "sockbuf exited with {status}");
        let lines: Vec<Value> = rest
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        let summary = lines
            .iter()
            .find(|v| v["kind"] == "summary")
            .expect("summary object")
            .clone();
        let end = lines.last().expect("end object").clone();
        assert_eq!(end["kind"], "end");
        assert_eq!(end["lost"], 0, "{end}");
        assert_eq!(end["faults"], 0, "{end}");
        (summary, end)
    }
}
