//! Attach backends: which hooks deliver the model's calls, and choosing one for this kernel.
//! Every backend's programs call the same model in trace-ebpf; here each is a table of
//! (program, hook), and one loop loads and attaches any of them.

use std::path::Path;

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, ProgramError, RawTracePoint, TracePoint},
};
use trace_common::{agg::Level, standby};

use crate::{error::SetupError, preflight};

/// How the programs attach to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// The best the kernel allows: fentry, then tp_btf, then kprobe, then tracepoint.
    Auto,
    /// fentry/fexit on tcp_sendmsg, sk_stream_wait_memory, tcp_rcv_established, and the
    /// UDP send and TCP/UDP receive functions.
    Fentry,
    /// BTF-typed tracepoints (tp_btf) on tcp_sendmsg_locked, sock_send_length, tcp_probe,
    /// sock_recv_length and net_dev_queue: the tracepoint backend's hooks, where fentry is
    /// refused.
    #[value(name = "tp_btf")]
    TpBtf,
    /// kprobe/kretprobe on the same functions as fentry.
    Kprobe,
    /// Tracepoints: tcp_sendmsg_locked, sock_send_length, sock_recv_length, tcp_probe,
    /// sched_switch (and sys_enter where tcp_sendmsg_locked is missing).
    Tracepoint,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fentry => "fentry",
            Self::TpBtf => "tp_btf",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }

    /// The hooks of this backend that `--summary` needs at the plan's level.
    fn hooks(self, plan: Plan) -> impl Iterator<Item = &'static Hook> {
        let marks = pieced_at_entry(plan.level, plan.standby);
        self.all_hooks(plan.standby)
            .filter(move |h| plan.level != Level::Counts || !COUNTS_SKIP.contains(&h.program))
            .filter(move |h| marks || h.program != PIECED_ENTRY)
    }

    /// The backend's own hooks, then the lifecycle hooks every backend shares; `standby`:
    /// programs may be preempted (see [`CALLS`]).
    fn all_hooks(self, standby: bool) -> impl Iterator<Item = &'static Hook> {
        let (own, common): (&[Hook], &[Hook]) = match self {
            Self::Auto => return [&[][..]; 6].into_iter().flatten(),
            Self::Fentry => (FENTRY, &[]),
            Self::Kprobe => (KPROBE, &[]),
            Self::TpBtf if syscall_form() => (TRACEPOINT_SYSCALLS, TP_BTF_COMMON),
            Self::TpBtf => (TP_BTF, TP_BTF_COMMON),
            // Before tcp_sendmsg_locked existed, the send call opens at the syscall.
            // SOCKBUF_TRACEPOINT_SYSCALLS=1 forces that variant, so that kernels which have the
            // tracepoint can test it too.
            Self::Tracepoint if syscall_form() => (TRACEPOINT_SYSCALLS, TRACEPOINT_COMMON),
            Self::Tracepoint => (TRACEPOINT, TRACEPOINT_COMMON),
        };
        // tcp_send_reset passes a reason from 6.10 on; each form has its own program.
        let reset: &[Hook] = if preflight::tracepoint_has_field("tcp", "tcp_send_reset", "reason") {
            &RESET_WITH_REASON
        } else {
            &RESET
        };
        let xmit: &[Hook] = if self.typed() { &XMIT_BTF } else { &XMIT };
        let calls = if standby { CALLS } else { CALLS_PIECED };
        [own, common, LIFECYCLE, xmit, reset, calls]
            .into_iter()
            .flatten()
    }

    /// Whether the backend's hooks pass typed sockets (BTF): their packets' fields are
    /// loaded directly, and `--summary` can keep a socket's counts in the socket itself.
    pub fn typed(self) -> bool {
        matches!(self, Self::Fentry | Self::TpBtf)
    }

    /// The hooks that see calls on sockets with a layer above TCP (kTLS), where the
    /// backend's own do not: all of the backend's hooks when `layered`, else none of them.
    fn layer_hooks(self, layered: bool) -> &'static [Hook] {
        match self {
            _ if !layered => &[],
            // Without the tracepoint (6.1 has none) the call's end is not seen: not traced.
            Self::Fentry | Self::Kprobe
                if !preflight::has_tracepoint("sock", "sock_send_length") =>
            {
                &[]
            }
            Self::Fentry | Self::Kprobe => LAYER_FUNCTIONS,
            // Its own sys_enter opens every call; this one, after it, flags the layered.
            Self::Tracepoint | Self::TpBtf => &LAYER_FUNCTIONS[..1],
            Self::Auto => &[],
        }
    }
}

/// Whether the tracepoint backend opens calls at the send syscalls' entries: before
/// tcp_sendmsg_locked existed. SOCKBUF_TRACEPOINT_SYSCALLS=1 forces that form, so that kernels
/// which have the tracepoint can test it too.
fn syscall_form() -> bool {
    std::env::var_os("SOCKBUF_TRACEPOINT_SYSCALLS").is_some()
        || !preflight::has_tracepoint("tcp", "tcp_sendmsg_locked")
}

#[derive(Clone, Copy)]
enum Kind {
    Tracepoint { category: &'static str },
    RawTracepoint { category: &'static str },
    BtfTracepoint { category: &'static str },
    FEntry,
    FExit,
    KProbe,
}

/// One program of a backend and the kernel function or tracepoint it attaches to.
struct Hook {
    program: &'static str,
    target: &'static str,
    kind: Kind,
}

const fn hook(program: &'static str, target: &'static str, kind: Kind) -> Hook {
    Hook {
        program,
        target,
        kind,
    }
}

/// A raw tracepoint hook: `category` is where tracefs lists the tracepoint.
const fn raw(program: &'static str, category: &'static str, target: &'static str) -> Hook {
    hook(program, target, Kind::RawTracepoint { category })
}

/// A classic tracepoint hook: `category` as for [`raw`].
const fn classic(program: &'static str, category: &'static str, target: &'static str) -> Hook {
    hook(program, target, Kind::Tracepoint { category })
}

/// A BTF-typed tracepoint hook (tp_btf): `category` as for [`raw`].
const fn btf(program: &'static str, category: &'static str, target: &'static str) -> Hook {
    hook(program, target, Kind::BtfTracepoint { category })
}

const FENTRY: &[Hook] = &[
    hook("send_tcp_sendmsg_fentry", "tcp_sendmsg", Kind::FEntry),
    hook("send_tcp_sendmsg_fexit", "tcp_sendmsg", Kind::FExit),
    hook(
        "block_sk_stream_wait_memory_fentry",
        "sk_stream_wait_memory",
        Kind::FEntry,
    ),
    hook(
        "block_sk_stream_wait_memory_fexit",
        "sk_stream_wait_memory",
        Kind::FExit,
    ),
    hook(
        "ack_tcp_rcv_established_fentry",
        "tcp_rcv_established",
        Kind::FEntry,
    ),
    hook("udp_udp_sendmsg_fexit", "udp_sendmsg", Kind::FExit),
    hook("udp_udpv6_sendmsg_fexit", "udpv6_sendmsg", Kind::FExit),
    hook("recv_tcp_recvmsg_fexit", "tcp_recvmsg", Kind::FExit),
    hook("recv_udp_recvmsg_fexit", "udp_recvmsg", Kind::FExit),
    hook("recv_udpv6_recvmsg_fexit", "udpv6_recvmsg", Kind::FExit),
    hook("recv_tcp_splice_read_fexit", "tcp_splice_read", Kind::FExit),
    hook(
        "life_tcp_timewait_state_process_fentry",
        "tcp_timewait_state_process",
        Kind::FEntry,
    ),
];

/// kretprobes are KProbe programs too; aya knows which from the program's section.
const KPROBE: &[Hook] = &[
    hook("send_tcp_sendmsg_kprobe", "tcp_sendmsg", Kind::KProbe),
    hook("send_tcp_sendmsg_kretprobe", "tcp_sendmsg", Kind::KProbe),
    hook(
        "block_sk_stream_wait_memory_kprobe",
        "sk_stream_wait_memory",
        Kind::KProbe,
    ),
    hook(
        "block_sk_stream_wait_memory_kretprobe",
        "sk_stream_wait_memory",
        Kind::KProbe,
    ),
    hook(
        "ack_tcp_rcv_established_kprobe",
        "tcp_rcv_established",
        Kind::KProbe,
    ),
    hook("udp_udp_sendmsg_kprobe", "udp_sendmsg", Kind::KProbe),
    hook("udp_udpv6_sendmsg_kprobe", "udpv6_sendmsg", Kind::KProbe),
    hook("udp_sendmsg_kretprobe", "udp_sendmsg", Kind::KProbe),
    hook("udp_sendmsg_kretprobe", "udpv6_sendmsg", Kind::KProbe),
    hook("recv_recvmsg_kprobe", "tcp_recvmsg", Kind::KProbe),
    hook("recv_recvmsg_kprobe", "udp_recvmsg", Kind::KProbe),
    hook("recv_recvmsg_kprobe", "udpv6_recvmsg", Kind::KProbe),
    hook("recv_recvmsg_kretprobe", "tcp_recvmsg", Kind::KProbe),
    hook("recv_recvmsg_kretprobe", "udp_recvmsg", Kind::KProbe),
    hook("recv_recvmsg_kretprobe", "udpv6_recvmsg", Kind::KProbe),
    hook(
        "recv_tcp_splice_read_kprobe",
        "tcp_splice_read",
        Kind::KProbe,
    ),
    hook("recv_recvmsg_kretprobe", "tcp_splice_read", Kind::KProbe),
    hook(
        "life_tcp_timewait_state_process_kprobe",
        "tcp_timewait_state_process",
        Kind::KProbe,
    ),
];

const TRACEPOINT: &[Hook] = &[
    raw("send_tcp_sendmsg_locked", "tcp", "tcp_sendmsg_locked"),
    raw("block_sched_switch", "sched", "sched_switch"),
];

/// The tracepoint backend's hooks, typed where a socket is read: the same programs' bodies
/// (trace-ebpf's `tp_btf`); in both forms (the syscall-entry one before tcp_sendmsg_locked).
const TP_BTF: &[Hook] = &[
    btf("send_tcp_sendmsg_locked_btf", "tcp", "tcp_sendmsg_locked"),
    raw("block_sched_switch", "sched", "sched_switch"),
];

const TP_BTF_COMMON: &[Hook] = &[
    btf("send_sock_send_length_btf", "sock", "sock_send_length"),
    btf("ack_tcp_probe_btf", "tcp", "tcp_probe"),
    btf("recv_sock_recv_length_btf", "sock", "sock_recv_length"),
];

/// The tracepoint backend on kernels without `tcp_sendmsg_locked`: the send syscalls' entries
/// open a call, and the scheduler's switches say when a sleeping writer runs again.
const TRACEPOINT_SYSCALLS: &[Hook] = &[
    raw("entry_sys_enter", "raw_syscalls", "sys_enter"),
    raw("entry_sched_switch", "sched", "sched_switch"),
];

/// Calls on sockets with a layer above TCP (kTLS) open at the syscall and end at the socket
/// layer's return (trace-ebpf's `layer`): where tcp_sendmsg is hooked, both; with the
/// tracepoint backend, the entry (the layer's records pass tcp_sendmsg_locked as later passes;
/// in the syscall-entry form it reopens the call its own sys_enter opened, flagged layered).
const LAYER_FUNCTIONS: &[Hook] = &[
    raw("layer_sys_enter", "raw_syscalls", "sys_enter"),
    raw("layer_sock_send_length", "sock", "sock_send_length"),
];

/// Both forms of the tracepoint backend.
const TRACEPOINT_COMMON: &[Hook] = &[
    raw("send_sock_send_length", "sock", "sock_send_length"),
    raw("ack_tcp_probe", "tcp", "tcp_probe"),
    raw("recv_sock_recv_length", "sock", "sock_recv_length"),
];

const RESET: [Hook; 1] = [raw("life_tcp_send_reset", "tcp", "tcp_send_reset")];

const RESET_WITH_REASON: [Hook; 1] = [raw("life_tcp_send_reset_reason", "tcp", "tcp_send_reset")];

/// Lifecycle hooks, and the task renames and births the comm filter follows, attached with
/// every backend: tracepoints all supported kernels have.
const LIFECYCLE: &[Hook] = &[
    raw("life_tcp_receive_reset", "tcp", "tcp_receive_reset"),
    raw("filter_task_rename", "task", "task_rename"),
    raw("filter_task_newtask", "task", "task_newtask"),
];

/// Packets handed to a device (a FIN leaving, UDP datagrams), and the sockets' state
/// changes: typed with tp_btf, whose loads of the packet's fields replace probe reads, and
/// whose typed socket reaches the counts it keeps itself (`--summary`, trace-ebpf's
/// `sk_counts`), which its CLOSE adds to the summary's.
const XMIT: [Hook; 2] = [
    raw("life_net_dev_queue", "net", "net_dev_queue"),
    raw("life_inet_sock_set_state", "sock", "inet_sock_set_state"),
];

const XMIT_BTF: [Hook; 2] = [
    btf("life_net_dev_queue_btf", "net", "net_dev_queue"),
    btf(
        "life_inet_sock_set_state_btf",
        "sock",
        "inet_sock_set_state",
    ),
];

/// The exit of a `sendfile()`, `splice()`, `sendmmsg()` or `recvmmsg()` whose kernel calls
/// were traced (every backend: no function hook sees a whole syscall on all of them), where
/// programs may be preempted: the raw `sys_exit`, at every syscall's exit (a classic
/// tracepoint is skipped while a preempted program holds the CPU's busy flag).
const CALLS: &[Hook] = &[raw("calls_sys_exit", "raw_syscalls", "sys_exit")];

/// The same where programs are not preempted: those four syscalls' own exits, so that the
/// others (a `write()`) pass no program (the raw `sys_exit` cost streaming 65 ns a write),
/// and, for `--summary` without `--full` ([`pieced_at_entry`]), their entries, which mark the
/// thread as in one: it tells a pieced call by that mark instead of reading the syscall's
/// number from the task's registers (two helper calls, 40 ns of a counted write's 230).
const CALLS_PIECED: &[Hook] = &[
    classic("calls_sys_exit_pieced", "syscalls", "sys_exit_sendfile64"),
    classic("calls_sys_exit_pieced", "syscalls", "sys_exit_splice"),
    classic("calls_sys_exit_pieced", "syscalls", "sys_exit_sendmmsg"),
    classic("calls_sys_exit_pieced", "syscalls", "sys_exit_recvmmsg"),
    classic("calls_sys_enter_pieced", "syscalls", "sys_enter_sendfile64"),
    classic("calls_sys_enter_pieced", "syscalls", "sys_enter_splice"),
    classic("calls_sys_enter_pieced", "syscalls", "sys_enter_sendmmsg"),
    classic("calls_sys_enter_pieced", "syscalls", "sys_enter_recvmmsg"),
];

/// The program on the pieced syscalls' entries (see [`CALLS_PIECED`]).
const PIECED_ENTRY: &str = "calls_sys_enter_pieced";

/// Whether the pieced syscalls' entries are hooked to mark the threads in them: by
/// `--summary` without `--full` alone (the rest reads the syscall's number where it needs
/// it), where the kernel does not preempt programs (their exits' own tracepoints are hooked).
pub fn pieced_at_entry(level: Level, standby: bool) -> bool {
    level == Level::Counts && !standby
}

/// Programs `--summary` leaves out unless `--full`: the call's start (requested bytes, sleeps),
/// the ACKs and the packets leaving. It counts calls from their returns alone, the few
/// hooks that run once per call; the lifecycle's rare events still stream.
const COUNTS_SKIP: &[&str] = &[
    "send_tcp_sendmsg_fentry",
    "block_sk_stream_wait_memory_fentry",
    "block_sk_stream_wait_memory_fexit",
    "ack_tcp_rcv_established_fentry",
    // kretprobes do not see the socket: the send kprobe stays.
    "block_sk_stream_wait_memory_kprobe",
    "block_sk_stream_wait_memory_kretprobe",
    "ack_tcp_rcv_established_kprobe",
    "send_tcp_sendmsg_locked",
    "send_tcp_sendmsg_locked_btf",
    "block_sched_switch",
    "entry_sys_enter",
    "layer_sys_enter",
    "entry_sched_switch",
    "ack_tcp_probe",
    "ack_tcp_probe_btf",
    "life_net_dev_queue",
    "life_net_dev_queue_btf",
    "life_tcp_timewait_state_process_fentry",
    "life_tcp_timewait_state_process_kprobe",
];

/// Why `mode` cannot work here, found without loading anything.
fn precheck(mode: AttachMode, plan: Plan) -> Result<(), String> {
    match mode {
        AttachMode::Kprobe if !Path::new("/sys/bus/event_source/devices/kprobe").exists() => {
            Err("the kernel has no kprobe PMU (CONFIG_KPROBES is off)".to_owned())
        }
        _ => missing_tracepoint(mode, plan).map_or(Ok(()), Err),
    }
}

/// The first tracepoint `mode` hooks with `plan` that the kernel lacks, said as the reason.
fn missing_tracepoint(mode: AttachMode, plan: Plan) -> Option<String> {
    mode.hooks(plan).find_map(|h| match h.kind {
        Kind::Tracepoint { category }
        | Kind::RawTracepoint { category }
        | Kind::BtfTracepoint { category }
            if !preflight::has_tracepoint(category, h.target) =>
        {
            Some(format!(
                "the kernel has no tracepoint {category}/{}",
                h.target
            ))
        }
        _ => None,
    })
}

/// The one line that matters of a load or attach failure.
fn reason(program: &str, h: &Hook, e: &ProgramError) -> String {
    let what = match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            // The verifier's last line says why (`R1 invalid mem access …`).
            let log = verifier_log.to_string();
            log::debug!("{program}: the verifier's log:\n{log}");
            let why = log.lines().rev().find(|l| {
                let l = l.trim();
                !l.is_empty()
                    && !l.starts_with("processed ")
                    && !l.starts_with("verification time")
                    && !l.starts_with("stack depth ")
            });
            match why {
                Some(why) => format!("the kernel refused to load it ({io_error}: {})", why.trim()),
                None => format!("the kernel refused to load it ({io_error})"),
            }
        }
        ProgramError::SyscallError(s) => format!("{} failed ({})", s.call, s.io_error),
        e => e.to_string(),
    };
    format!("{program} on {}: {what}", h.target)
}

/// A hook's program and, where it has one and `standby`, its standby copy
/// (`trace_common::standby`), in the order that makes the copy run after the program: a
/// tracepoint calls its programs in the order they were attached, a BPF trampoline
/// (fentry/fexit) the newest first.
fn programs(h: &Hook, standby: bool) -> impl Iterator<Item = &'static str> {
    let copy = standby::of(h.program)
        .map(|(_, copy)| copy)
        .filter(|_| standby || standby::always(h.program));
    let (first, then) = match h.kind {
        Kind::FEntry | Kind::FExit => (copy, Some(h.program)),
        _ => (Some(h.program), copy),
    };
    first.into_iter().chain(then)
}

/// Loads a hook's programs (the kernel's verifier checks them), and attaches them unless
/// `verify_only`.
fn load_and_attach(
    ebpf: &mut Ebpf,
    h: &Hook,
    plan: Plan,
    btf: Option<&Btf>,
    verify_only: bool,
) -> Result<(), String> {
    programs(h, plan.standby)
        .try_for_each(|program| load_and_attach_one(ebpf, program, h, btf, verify_only))
}

fn load_and_attach_one(
    ebpf: &mut Ebpf,
    program: &str,
    h: &Hook,
    btf: Option<&Btf>,
    verify_only: bool,
) -> Result<(), String> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("{program} missing from the object"))?;
    let need_btf = || btf.ok_or(ProgramError::NotLoaded);
    let r = match h.kind {
        Kind::Tracepoint { category } => <&mut TracePoint>::try_from(prog).and_then(|p| {
            // One program for several syscalls' exits: loaded once.
            if p.fd().is_err() {
                p.load()?;
            }
            if !verify_only {
                p.attach(category, h.target)?;
            }
            Ok(())
        }),
        Kind::RawTracepoint { .. } => <&mut RawTracePoint>::try_from(prog).and_then(|p| {
            p.load()?;
            if !verify_only {
                p.attach(h.target)?;
            }
            Ok(())
        }),
        Kind::BtfTracepoint { .. } => <&mut BtfTracePoint>::try_from(prog).and_then(|p| {
            p.load(h.target, need_btf()?)?;
            if !verify_only {
                p.attach()?;
            }
            Ok(())
        }),
        Kind::FEntry => <&mut FEntry>::try_from(prog).and_then(|p| {
            p.load(h.target, need_btf()?)?;
            if !verify_only {
                p.attach()?;
            }
            Ok(())
        }),
        Kind::FExit => <&mut FExit>::try_from(prog).and_then(|p| {
            p.load(h.target, need_btf()?)?;
            if !verify_only {
                p.attach()?;
            }
            Ok(())
        }),
        Kind::KProbe => <&mut KProbe>::try_from(prog).and_then(|p| {
            // One kprobe program may be listed for several functions: load it once.
            if p.fd().is_err() {
                p.load()?;
            }
            if !verify_only {
                p.attach(h.target, 0)?;
            }
            Ok(())
        }),
    };
    r.map_err(|e| reason(program, h, &e))
}

/// Unloads (and so detaches) whatever of `mode` got loaded before a failure.
fn unload(ebpf: &mut Ebpf, mode: AttachMode) {
    let hooks = [false, true]
        .into_iter()
        .flat_map(|standby| mode.all_hooks(standby))
        .chain(mode.layer_hooks(true));
    for program in hooks.flat_map(|h| programs(h, true)) {
        if let Some(p) = ebpf.program_mut(program) {
            let _ = match p {
                aya::programs::Program::TracePoint(p) => p.unload(),
                aya::programs::Program::RawTracePoint(p) => p.unload(),
                aya::programs::Program::BtfTracePoint(p) => p.unload(),
                aya::programs::Program::FEntry(p) => p.unload(),
                aya::programs::Program::FExit(p) => p.unload(),
                aya::programs::Program::KProbe(p) => p.unload(),
                _ => Ok(()),
            };
        }
    }
}

/// What to attach besides the backend: the hooks `--summary` needs at `level`, and whether
/// the standby copies.
#[derive(Clone, Copy)]
struct Plan {
    level: Level,
    standby: bool,
    /// Sockets with a layer above TCP (kTLS) may exist: their hooks are attached too.
    layered: bool,
}

fn try_mode(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    plan: Plan,
    btf: Option<&Btf>,
) -> Result<(), String> {
    precheck(mode, plan)?;
    let layer = mode
        .layer_hooks(plan.layered)
        .iter()
        .filter(|h| plan.level != Level::Counts || !COUNTS_SKIP.contains(&h.program));
    for h in mode.hooks(plan).chain(layer) {
        if let Err(e) = load_and_attach(ebpf, h, plan, btf, false) {
            unload(ebpf, mode);
            return Err(e);
        }
    }
    if plan.layered
        && matches!(mode, AttachMode::Fentry | AttachMode::Kprobe)
        && mode.layer_hooks(true).is_empty()
    {
        log::info!(
            "kTLS: the kernel has no sock_send_length tracepoint: sends on kTLS sockets are not traced"
        );
    }
    Ok(())
}

/// What this kernel makes of one backend, for `sockbuf check`.
#[derive(Debug, serde::Serialize)]
pub struct BackendCheck {
    pub attach: &'static str,
    /// The kernel's verifier accepted every program of the backend.
    pub verified: bool,
    /// And every program attached to its hook.
    pub attached: bool,
    /// Why not, when either is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Loads each backend's programs (verify), attaches them, and unloads them again; the standby
/// copies too if `standby`.
pub fn check_all(ebpf: &mut Ebpf, standby: bool) -> Vec<BackendCheck> {
    let btf = Btf::from_sys_fs().ok();
    let plan = Plan {
        level: Level::Off,
        standby,
        layered: true,
    };
    [
        AttachMode::Fentry,
        AttachMode::TpBtf,
        AttachMode::Kprobe,
        AttachMode::Tracepoint,
    ]
    .into_iter()
    .map(|mode| {
        // Where a hook is missing the backend can never attach, and that is the reason: its
        // programs are not verified (a BTF-typed one has no types to be verified against; a
        // raw one would be judged by a verifier that never runs it, 6.1's, whose 512-byte
        // stack rule the raw tracepoint programs' call chains exceed).
        let verified = match missing_tracepoint(mode, plan) {
            Some(why) => Err(why),
            None => mode
                .all_hooks(plan.standby)
                .chain(mode.layer_hooks(true))
                .try_for_each(|h| load_and_attach(ebpf, h, plan, btf.as_ref(), true)),
        };
        unload(ebpf, mode);
        let attached = verified
            .clone()
            .and_then(|()| try_mode(ebpf, mode, plan, btf.as_ref()));
        unload(ebpf, mode);
        BackendCheck {
            attach: mode.name(),
            verified: verified.is_ok(),
            attached: attached.is_ok(),
            why: attached.err(),
        }
    })
    .collect()
}

/// Attaches the requested backend, or with `auto` the best one that works, and says why each
/// better one was passed over: the hooks `--summary` needs at `level`, with the standby
/// copies if `standby`, and those of sockets with a layer above TCP if `layered`. The other backends' programs are never left loaded.
pub fn attach(
    ebpf: &mut Ebpf,
    requested: AttachMode,
    level: Level,
    standby: bool,
    layered: bool,
) -> Result<(AttachMode, Vec<String>), SetupError> {
    let btf = Btf::from_sys_fs().ok();
    let plan = Plan {
        level,
        standby,
        layered,
    };
    if requested != AttachMode::Auto {
        return match try_mode(ebpf, requested, plan, btf.as_ref()) {
            Ok(()) => Ok((requested, Vec::new())),
            Err(why) => Err(SetupError::AttachUnavailable {
                mode: requested.name(),
                why,
            }),
        };
    }
    let mut refused = Vec::new();
    for mode in [
        AttachMode::Fentry,
        AttachMode::TpBtf,
        AttachMode::Kprobe,
        AttachMode::Tracepoint,
    ] {
        match try_mode(ebpf, mode, plan, btf.as_ref()) {
            Ok(()) => return Ok((mode, refused)),
            Err(why) => refused.push(format!("{}: {why}", mode.name())),
        }
    }
    Err(SetupError::NoBackend(refused.join("; ")))
}
