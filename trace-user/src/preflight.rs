//! Checks and set-up before anything is loaded: privileges, tracefs.

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

/// tracefs mounted by sockbuf, unmounted again when dropped; a mount that was already there is
/// left alone.
pub struct TracefsMount {
    mounted_here: bool,
}

impl TracefsMount {
    pub fn ensure() -> Result<Self, SetupError> {
        if Path::new(TRACEFS).join("events").is_dir() {
            return Ok(Self {
                mounted_here: false,
            });
        }
        let c = |s: &str| CString::new(s).expect("no NUL");
        let (src, target, fstype) = (c("tracefs"), c(TRACEFS), c("tracefs"));
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(SetupError::Tracefs(io::Error::last_os_error()));
        }
        log::info!("mounted tracefs at {TRACEFS} (unmounted again at exit)");
        Ok(Self { mounted_here: true })
    }
}

impl Drop for TracefsMount {
    fn drop(&mut self) {
        if self.mounted_here {
            let target = CString::new(TRACEFS).expect("no NUL");
            // SAFETY: valid path; failure only leaves the mount in place.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
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
