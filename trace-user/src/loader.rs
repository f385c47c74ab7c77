//! Loads sockbuf's eBPF object with its read-only globals, and attaches it.

use std::os::fd::AsFd;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use aya_log::EbpfLogger;
use trace_common::{
    Filter, KernelOffsets,
    agg::{Level, PENDING_ENTRIES, Pending, SockAgg},
    counters, globals, maps, standby,
};

use crate::{
    attach::{self, AttachMode},
    bpfinfo::{kprobe_misses, recursion_misses},
    btf::KernelBtf,
    layer,
    preflight::{self, Mount},
    summary::{KernelCounts, SkCounts},
};

/// What to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub filter: Filter,
    pub attach: AttachMode,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// Whether the programs' own diagnostics are wanted (aya-log at -v).
    pub kernel_log: bool,
    /// Whether the per-call events are counted in the kernel instead of streamed
    /// (`--summary`), and how much of them (`--full`).
    pub aggregate: Level,
    /// `--summary`: sockets the kernel counts at once (AGG's entries).
    pub max_sockets: u32,
    /// Which calls' stacks are taken (`trace_common::stacks`), and how many distinct ones
    /// the kernel's map holds.
    pub stacks: u32,
    pub max_stacks: u32,
}

/// Counters the programs keep per CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Events dropped because the ring buffer was full.
    pub lost: u64,
    /// Events abandoned because a kernel read failed or a map was full.
    pub faults: u64,
    /// Runs of sockbuf's programs the kernel skipped: a program already running on that CPU
    /// (preempted, or interrupted) is not entered again, and no standby copy took the run
    /// over (`trace_common::standby`). Those events never existed.
    pub missed: u64,
    /// `--summary`: calls streamed as events because AGG had no entry for their socket.
    pub agg_streamed: u64,
    /// `--stacks`: stacks not taken (no room in the stack map, or the walk failed).
    pub stacks_lost: u64,
}

/// Wake the reader when a sixteenth of the ring holds data (and otherwise on its drain timer):
/// far from full, yet one wake-up per hundreds of events.
fn wakeup_bytes(ring_bytes: u32) -> u64 {
    u64::from(ring_bytes / 16)
}

/// The syscall-exit program of `sendfile()`/`splice()`/`sendmmsg()` calls.
const EXIT_PROGRAM: &str = "calls_sys_exit";

/// The syscall-entry programs that open send calls.
const ENTRY_PROGRAMS: &[&str] = &["entry_sys_enter", "layer_sys_enter"];

/// How often the reader drains without being woken: the most an event waits at low rates.
pub const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// The eBPF object with its globals set and its maps created; no program loaded yet.
/// `standby`: the standby copies will be attached, so the programs mark their calls.
pub fn load_object(opts: &LoadOptions, standby: bool) -> anyhow::Result<Ebpf> {
    load_object_with(opts, standby, layer::tcp_sendmsg())
}

/// [`load_object`], with `tcp_sendmsg`'s address where sockets with a layer above TCP (kTLS)
/// are to be told apart.
fn load_object_with(
    opts: &LoadOptions,
    standby: bool,
    tcp_sendmsg: Option<u64>,
) -> anyhow::Result<Ebpf> {
    let offsets = KernelBtf::from_sys()?.kernel_offsets()?;
    // aya-log's level is a global too: off unless asked for, so the programs skip the work.
    let log_level: u8 = if opts.kernel_log {
        aya_log::Level::Trace as u8
    } else {
        0
    };
    EbpfLoader::new()
        .override_global(globals::FILTER, &opts.filter, true)
        .override_global(globals::KOFFSETS, &offsets, true)
        .override_global(aya_log::LEVEL, &log_level, false)
        .override_global(globals::WAKEUP_BYTES, &wakeup_bytes(opts.ring_bytes), true)
        .override_global(globals::AGGREGATE, &(opts.aggregate as u32), true)
        .override_global(globals::MARK_CALLS, &standby::mark_mask(standby), true)
        .override_global(globals::TCP_SENDMSG, &tcp_sendmsg.unwrap_or(0), true)
        .override_global(globals::STACKS, &opts.stacks, true)
        .override_global(
            globals::PIECED_AT_ENTRY,
            &u32::from(attach::pieced_at_entry(opts.aggregate, standby)),
            true,
        )
        // Only the BTF-typed hooks can reach a socket's storage: elsewhere this is unread.
        .override_global(
            globals::SK_COUNTING,
            &kept_counts_netns(opts.aggregate, &offsets),
            true,
        )
        .map_max_entries(maps::EVENTS, opts.ring_bytes)
        .map_max_entries(maps::AGG, opts.max_sockets.max(1))
        .map_max_entries(
            maps::STACKS,
            if opts.stacks == trace_common::stacks::OFF {
                1
            } else {
                opts.max_stacks.max(1)
            },
        )
        .map_max_entries(maps::PENDING, opts.max_sockets.clamp(1, PENDING_ENTRIES))
        .load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/trace-ebpf"
        )))
        .context("loading the eBPF object")
}

/// The network namespace whose sockets keep their `--summary` counts themselves
/// (trace-ebpf's `sk_counts`): sockbuf's own, whose socket table it reads (0: none).
fn kept_counts_netns(level: Level, offsets: &KernelOffsets) -> u32 {
    if level != Level::Counts || offsets.sk_net == 0 || offsets.net_inum == 0 {
        return 0;
    }
    std::fs::metadata("/proc/self/ns/net").map_or(0, |m| {
        use std::os::unix::fs::MetadataExt as _;
        m.ino() as u32
    })
}

/// The loaded, attached programs. Dropping it detaches everything.
pub struct Tracer {
    ebpf: Ebpf,
    pub mode: AttachMode,
    /// Why better backends were not used (for `--attach auto`).
    pub refused: Vec<String>,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    _tracefs: Mount,
}

impl Tracer {
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        let _signals = crate::stop::HeldBack::new();
        preflight::check_privileges()?;
        let tracefs = Mount::tracefs()?;
        // The copies cost a map update per program run; only where a program can be
        // preempted are they worth it.
        let standby = preflight::programs_preemptible();
        log::info!(
            "standby copies {}",
            if standby {
                "attached: the kernel may preempt a task inside a BPF program"
            } else {
                "not attached: the kernel does not preempt tasks inside BPF programs"
            }
        );
        let tcp_sendmsg = layer::tcp_sendmsg();
        let mut ebpf = load_object_with(opts, standby, tcp_sendmsg)?;
        // Taken before the programs load: they refer to the log map by fd.
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::debug!("no eBPF log channel: {e}");
                None
            }
        };
        let (mode, refused) = attach::attach(
            &mut ebpf,
            opts.attach,
            opts.aggregate,
            standby,
            tcp_sendmsg.is_some(),
        )?;
        Ok(Self {
            ebpf,
            mode,
            refused,
            logger,
            _tracefs: tracefs,
        })
    }

    /// The event ring buffer; can be taken once.
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .context("EVENTS map already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The programs' log channel (aya-log), forwarding to the `log` crate.
    pub fn take_logger(&mut self) -> Option<EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// The map of the stacks the programs take (`--stacks`), taken out of the object.
    pub fn take_stacks(&mut self) -> anyhow::Result<crate::stacks::StackNames> {
        let map = self
            .ebpf
            .take_map(maps::STACKS)
            .context("STACKS map missing")?;
        Ok(crate::stacks::StackNames::new(
            aya::maps::StackTraceMap::try_from(map)?,
        ))
    }

    /// `--summary`: the kernel's counts, taken so that the summary can take each socket's
    /// entries out when it closes.
    /// `full`: writes are timed to their ACK (PENDING is in use).
    pub fn take_counts(&mut self, full: bool) -> anyhow::Result<KernelCounts> {
        let agg = self.ebpf.take_map(maps::AGG).context("AGG map missing")?;
        let pending = self
            .ebpf
            .take_map(maps::PENDING)
            .context("PENDING map missing")?;
        // Sockets keep their counts themselves where the hooks are typed (`sk_counts`).
        let sk = if !full && self.mode.typed() {
            Some(SkCounts::new(&mut self.ebpf)?)
        } else {
            None
        };
        Ok(KernelCounts::new(
            PerCpuHashMap::<_, u64, SockAgg>::try_from(agg)?,
            if full {
                Some(HashMap::<_, u64, Pending>::try_from(pending)?)
            } else {
                None
            },
            sk,
        ))
    }

    /// The run time and runs of sockbuf's programs, as the kernel counts them: only while
    /// its statistics are on (`kernel.bpf_stats_enabled`, or an fd of `BPF_ENABLE_STATS`).
    pub fn run_time(&self) -> (std::time::Duration, u64) {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.info().ok())
            .fold((std::time::Duration::ZERO, 0), |(t, n), i| {
                (t + i.run_time(), n + i.run_count())
            })
    }

    /// Programs sockbuf has loaded into the kernel (`export`'s health figure).
    pub fn loaded_programs(&self) -> usize {
        self.ebpf.programs().filter(|(_, p)| p.fd().is_ok()).count()
    }

    pub fn counters(&self) -> anyhow::Result<KernelCounters> {
        let map = self.ebpf.map(maps::LOST).context("LOST map missing")?;
        let arr = PerCpuArray::<_, u64>::try_from(map)?;
        let sum = |i: u32| arr.get(&i, 0).map(|v| v.iter().sum::<u64>());
        let standby_map = self
            .ebpf
            .map(maps::STANDBY)
            .context("STANDBY map missing")?;
        let standby_map = PerCpuArray::<_, u64>::try_from(standby_map)?;
        let exits_missed = sum(counters::EXITS_MISSED)?;
        if exits_missed > 0 {
            log::warn!(
                "the kernel skipped the exit of {exits_missed} sendfile/splice/sendmmsg calls: their call events have no result"
            );
        }
        let mut missed = exits_missed;
        // None: not loaded (a copy left out where programs are not preempted).
        let misses = |name: &str| {
            self.ebpf
                .program(name)
                .and_then(|p| p.fd().ok())
                .map(|fd| recursion_misses(fd.as_fd()))
        };
        for (name, _) in self.ebpf.programs() {
            if standby::is_copy(name) {
                continue;
            }
            let skipped = misses(name).unwrap_or(0);
            // A run the copy did not take is one the kernel skipped for the copy too (or one
            // a stale note of a skipped copy hid): at most the copy's own skips. Both bounds
            // hold; the smaller is the count. The program's count alone would also hold
            // skips the program's guard turns away anyway (sys_enter: every syscall).
            let (taken, bound) =
                match standby::of(name).and_then(|(slot, copy)| Some((slot, misses(copy)?))) {
                    Some((slot, copy_skipped)) => (
                        standby_map.get(&slot, 0).map(|v| v.iter().sum::<u64>())?,
                        copy_skipped,
                    ),
                    None => (0, u64::MAX),
                };
            if taken > 0 {
                log::debug!("{name}: its standby copy took {taken} of {skipped} skipped runs");
            }
            let n = skipped.saturating_sub(taken).min(bound);
            if name == EXIT_PROGRAM {
                // It runs at every syscall's exit on the machine, nearly all with nothing to
                // do; the skips that lost something are found and counted in the kernel.
                log::debug!("{name}: {n} runs skipped, of them {exits_missed} calls' exits");
                continue;
            }
            if ENTRY_PROGRAMS.contains(&name) {
                // Also at every syscall on the machine, and a skip loses no event: a send
                // call that began then still ends with its event, without its start
                // (requested bytes, a sleep). docs/limits.md says so.
                if n > 0 {
                    log::info!(
                        "the kernel skipped {n} runs of {name} (any syscall): a send call starting then shows no start or sleep"
                    );
                }
                continue;
            }
            if n > 0 {
                log::warn!("the kernel skipped {n} runs of {name}");
            }
            missed += n;
        }
        // The kernel's own skips of the kprobes themselves (a kretprobe out of instances, a
        // probe hit inside another probe's handler), which no program's count shows.
        let kprobes: Vec<u32> = self
            .ebpf
            .programs()
            .filter(|(_, p)| matches!(p, aya::programs::Program::KProbe(_)))
            .filter_map(|(_, p)| p.info().ok().map(|i| i.id()))
            .collect();
        let probe_misses = kprobe_misses(&kprobes);
        if probe_misses > 0 {
            log::warn!("the kernel skipped {probe_misses} hits of sockbuf's kprobes");
        }
        missed += probe_misses;
        Ok(KernelCounters {
            lost: sum(counters::LOST_EVENTS)?,
            faults: sum(counters::READ_ERRORS)?,
            missed,
            agg_streamed: sum(counters::AGG_STREAMED)?,
            stacks_lost: sum(counters::STACKS_LOST)?,
        })
    }
}
