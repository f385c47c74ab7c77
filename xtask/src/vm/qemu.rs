//! One guest boot under QEMU's software emulation, its serial console read line by line as it
//! comes, with a hard deadline: a guest that hangs, panics or never says it is done is stopped
//! and reported, never waited on.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::kernels::Kernel;

/// The line /init prints last, after every step.
pub const DONE: &str = "VMTEST:done";

/// How a boot ended.
pub enum End {
    /// /init printed its last line.
    Done,
    /// The deadline passed first; QEMU was killed.
    Timeout,
    /// QEMU exited before /init finished (a panic reboots, and -no-reboot makes that an exit).
    Exited,
}

/// How the boot ended, and when.
pub struct Console {
    pub end: End,
    pub elapsed: Duration,
}

/// Boots `kernel` with `initrd`, the extra kernel command line `params` (read by /init), and
/// `on_line` called for each console line as it arrives; the console also goes to `log`.
pub fn boot(
    kernel: &Kernel,
    smp: u32,
    initrd: &Path,
    params: &str,
    timeout: Duration,
    log: &Path,
    on_line: &mut dyn FnMut(Duration, &str),
) -> anyhow::Result<Console> {
    let mut log = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        // /dev/kvm here is nested and software-backed, and stock kernels die on it. One TCG
        // thread: multi-threaded TCG hung or oopsed about one boot in four while ftrace
        // patched the kernel text for fentry.
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-m",
        "1G",
        "-smp",
        &smp.to_string(),
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-nic",
        "none",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(format!("console=ttyS0 panic=-1 quiet {params}"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let tx_err = tx.clone();
    thread::spawn(move || read_lines(stdout, "", &tx));
    thread::spawn(move || read_lines(stderr, "qemu: ", &tx_err));

    let deadline = start + timeout;
    let mut end = End::Exited;
    let mut finished_at = None;
    loop {
        // Once /init is done, QEMU has a little while to power off by itself.
        let limit = finished_at.map_or(deadline, |t: Instant| t + Duration::from_secs(30));
        let wait = limit.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(line) => {
                let at = start.elapsed();
                writeln!(log, "[{:8.3}] {line}", at.as_secs_f64())?;
                on_line(at, &line);
                if line.trim_end().ends_with(DONE) {
                    end = End::Done;
                    finished_at = Some(Instant::now());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if finished_at.is_none() {
                    end = End::Timeout;
                }
                let _ = child.kill();
                // Keep what was still on its way: the last lines say where it hung.
                for line in rx.iter() {
                    writeln!(log, "[{:8.3}] {line}", start.elapsed().as_secs_f64())?;
                    on_line(start.elapsed(), &line);
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let elapsed = start.elapsed();
    let status = child.wait().context("waiting for qemu")?;
    writeln!(log, "[{:8.3}] qemu exited: {status}", elapsed.as_secs_f64())?;
    Ok(Console { end, elapsed })
}

/// Sends each line of `from` (lossily decoded: a dying kernel may print anything; the serial
/// line ends lines with CR LF) until it closes.
fn read_lines(from: impl Read, prefix: &str, tx: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\r', '\n']);
        if tx.send(format!("{prefix}{line}")).is_err() {
            return;
        }
        buf.clear();
    }
}
