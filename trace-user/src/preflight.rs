//! Checks and set-up before anything is loaded: privileges, tracefs, preemption.

use std::{ffi::CString, io, path::Path};

use crate::error::SetupError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set, from `/proc/self/status`.
fn effective_caps() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| io::Error::other("no CapEff in /proc/self/status"))
}

/// Loading tracing programs needs CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN.
pub fn check_privileges() -> Result<(), SetupError> {
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(SetupError::NotPrivileged)
    }
}

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// A filesystem sockbuf mounted, unmounted again when dropped; one that was already mounted
/// is left alone.
pub struct Mount {
    target: &'static str,
    mounted_here: bool,
}

impl Mount {
    /// tracefs, where the tracepoints are listed.
    pub fn tracefs() -> Result<Self, SetupError> {
        Self::ensure("tracefs", TRACEFS, "events").map_err(SetupError::Tracefs)
    }

    /// Mounts `fstype` at `target` unless `target/probe` is there already.
    fn ensure(fstype: &str, target: &'static str, probe: &str) -> io::Result<Self> {
        if Path::new(target).join(probe).exists() {
            return Ok(Self {
                target,
                mounted_here: false,
            });
        }
        let c = |s: &str| CString::new(s).expect("no NUL");
        let (src, dir, fs) = (c(fstype), c(target), c(fstype));
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc =
            unsafe { libc::mount(src.as_ptr(), dir.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        log::info!("mounted {fstype} at {target} (unmounted again at exit)");
        Ok(Self {
            target,
            mounted_here: true,
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted_here {
            let target = CString::new(self.target).expect("no NUL");
            // SAFETY: valid path; failure only leaves the mount in place.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Whether the kernel may preempt a task inside a BPF program (full, lazy or RT preemption),
/// so that it skips the program for other tasks meanwhile: then the standby copies are
/// attached (`trace_common::standby`). Read from the scheduler's debugfs file, whose current
/// mode is in parentheses (`none voluntary (full) lazy`), debugfs mounted for the moment if it
/// is not; without it, from the kernel's build (`PREEMPT…` in its version string).
/// `SOCKBUF_STANDBY=0|1` decides instead.
pub fn programs_preemptible() -> bool {
    if let Some(v) = std::env::var_os("SOCKBUF_STANDBY") {
        return v != "0";
    }
    let mode = Mount::ensure("debugfs", "/sys/kernel/debug", "sched")
        .ok()
        .and_then(|_debugfs| std::fs::read_to_string("/sys/kernel/debug/sched/preempt").ok())
        .and_then(|modes| {
            modes.split_whitespace().find_map(|m| {
                m.strip_prefix('(')
                    .and_then(|m| m.strip_suffix(')'))
                    .map(str::to_owned)
            })
        });
    // Unreadable (some kernels refuse it): the boot's choice, else the build's default.
    let mode = mode
        .or_else(|| {
            let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
            let m = cmdline
                .split_whitespace()
                .find_map(|w| w.strip_prefix("preempt="))?;
            Some(m.to_owned())
        })
        .or_else(build_preemption);
    if let Some(mode) = mode {
        log::debug!("preemption mode: {mode}");
        return !matches!(mode.as_str(), "none" | "voluntary");
    }
    std::fs::read_to_string("/proc/sys/kernel/version")
        .is_ok_and(|v| v.split_whitespace().any(|w| w.starts_with("PREEMPT")))
}

/// The preemption mode the kernel was built with (the default of a dynamic one), from its
/// config: /proc/config.gz where the kernel carries it, else the file in /boot Debian installs.
fn build_preemption() -> Option<String> {
    let config = std::fs::File::open("/proc/config.gz")
        .ok()
        .and_then(|f| io::read_to_string(flate2::read::GzDecoder::new(f)).ok())
        .or_else(|| {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
            std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
        })?;
    [
        ("CONFIG_PREEMPT_RT=y", "full"),
        ("CONFIG_PREEMPT_NONE=y", "none"),
        ("CONFIG_PREEMPT_VOLUNTARY=y", "voluntary"),
        ("CONFIG_PREEMPT=y", "full"),
        ("CONFIG_PREEMPT_LAZY=y", "lazy"),
    ]
    .into_iter()
    .find(|(line, _)| config.lines().any(|l| l == *line))
    .map(|(_, mode)| mode.to_owned())
}

/// Whether the kernel has tracepoint `category/name`.
pub fn has_tracepoint(category: &str, name: &str) -> bool {
    Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .is_dir()
}

/// Whether a tracepoint's record has a field `field` (its `format` file names it).
pub fn tracepoint_has_field(category: &str, name: &str, field: &str) -> bool {
    let path = Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    std::fs::read_to_string(path).is_ok_and(|f| {
        f.lines()
            .any(|l| l.trim_start().starts_with("field:") && l.contains(&format!(" {field};")))
    })
}
