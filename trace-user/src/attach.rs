//! Attach backends: which hooks deliver the model's calls, and choosing one for this kernel.

use std::path::Path;

use aya::{Ebpf, programs::RawTracePoint};

use crate::{error::SetupError, preflight};

/// How the programs attach to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// The best the kernel allows: fentry, then kprobe, then tracepoint.
    Auto,
    /// fentry/fexit on tcp_sendmsg and sk_stream_wait_memory.
    Fentry,
    /// kprobe/kretprobe on the same functions.
    Kprobe,
    /// Raw tracepoints: sock_send_length, tcp_sendmsg_locked, tcp_probe, sched_switch.
    Tracepoint,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }
}

/// One program of a backend and the hook it attaches to.
struct Hook {
    program: &'static str,
    category: &'static str,
    name: &'static str,
}

/// The tracepoint backend. Program names follow `<area>_<hook>`.
const TRACEPOINT_HOOKS: &[Hook] = &[
    Hook {
        program: "send_tcp_sendmsg_locked",
        category: "tcp",
        name: "tcp_sendmsg_locked",
    },
    Hook {
        program: "send_sock_send_length",
        category: "sock",
        name: "sock_send_length",
    },
    Hook {
        program: "block_sched_switch",
        category: "sched",
        name: "sched_switch",
    },
    Hook {
        program: "ack_tcp_probe",
        category: "tcp",
        name: "tcp_probe",
    },
];

/// Why a function-hook backend cannot run here, or `None` when it could.
fn function_hooks_refused(mode: AttachMode) -> String {
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    match mode {
        AttachMode::Kprobe if !kprobe_pmu => {
            "the kernel has no kprobe PMU (CONFIG_KPROBES is off)".to_owned()
        }
        _ => format!("this sockbuf build has no {} backend yet", mode.name()),
    }
}

/// The backend to use for `requested`, and why each better one was passed over.
pub fn choose(requested: AttachMode) -> Result<(AttachMode, Vec<String>), SetupError> {
    let mut refused = Vec::new();
    for mode in [AttachMode::Fentry, AttachMode::Kprobe] {
        if requested == mode {
            return Err(SetupError::AttachUnavailable {
                mode: mode.name(),
                why: function_hooks_refused(mode),
            });
        }
        if requested == AttachMode::Auto {
            refused.push(format!("{}: {}", mode.name(), function_hooks_refused(mode)));
        }
    }
    for h in TRACEPOINT_HOOKS {
        if !preflight::has_tracepoint(h.category, h.name) {
            return Err(SetupError::MissingTracepoint(
                h.name,
                "fentry or --attach kprobe",
            ));
        }
    }
    Ok((AttachMode::Tracepoint, refused))
}

/// Loads and attaches the chosen backend's programs; the others are never loaded.
pub fn attach(ebpf: &mut Ebpf, mode: AttachMode) -> anyhow::Result<()> {
    use anyhow::Context as _;
    debug_assert_eq!(mode, AttachMode::Tracepoint);
    for h in TRACEPOINT_HOOKS {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(h.program)
            .with_context(|| format!("program {} missing from the eBPF object", h.program))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("loading {}", h.program))?;
        prog.attach(h.name)
            .with_context(|| format!("attaching {} to {}", h.program, h.name))?;
    }
    Ok(())
}
