//! `--stacks`: the stacks the programs took (ids in the STACKS map) turned into function
//! names with blazesym — the kernel's from kallsyms, a process's from its ELF files
//! (symbols, DWARF where present; PIE and shared libraries through its mappings).

mod folded;
mod procmaps;

use std::{collections::HashMap, rc::Rc};

use aya::maps::{MapData, StackTraceMap};
use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Kernel, Process, Source},
};
pub use folded::{Folded, Weight};
use procmaps::ProcMaps;
use trace_common::{NO_STACK, StackIds};

/// A stack's frames, innermost first, as names: `function`, or where no symbol covers the
/// address `module+0xoffset` (a stripped binary), or `0xaddress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Frames {
    pub user: Vec<String>,
    pub kernel: Vec<String>,
}

impl Frames {
    /// One line's short form: the innermost user frames, then the kernel's.
    pub fn short(&self) -> String {
        let mut s = self
            .user
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join(" < ");
        if !self.kernel.is_empty() {
            let k = self
                .kernel
                .iter()
                .take(2)
                .cloned()
                .collect::<Vec<_>>()
                .join(" < ");
            s = format!("{s}  [kernel: {k}]");
        }
        s
    }
}

/// Reads and names the stacks of events, caching by id: without `BPF_F_REUSE_STACKID` an
/// id names one stack for the map's life.
pub struct StackNames {
    map: StackTraceMap<MapData>,
    symbolizer: Symbolizer,
    kernel: HashMap<u32, Rc<[String]>>,
    user: HashMap<(u32, u32), UserStack>,
    frames: HashMap<(u32, StackIdsKey, Vec<u64>), Rc<Frames>>,
    maps: ProcMaps,
}

type StackIdsKey = (u32, u32);

/// A user stack's addresses, and each one's names (see [`StackNames::user_names`]).
type UserStack = (Rc<[u64]>, Rc<[Vec<String>]>);

/// Frames taken from the stack's top at most (the rest of a deep stack is the walk's).
const MAX_SCANNED: usize = 16;

/// Kernel frames of the tracing itself (the program, and the tracepoint, kprobe or
/// trampoline that ran it), by name prefix.
const TRACING_FRAMES: &[&str] = &[
    "bpf_prog_",
    "bpf_trace_run",
    "__bpf_trace_",
    "__traceiter_",
    "trace_call_bpf",
    "call_trace_",
    "perf_trace_",
    "bpf_trampoline_",
    "kprobe_",
    "kretprobe_",
    "pre_handler_kretprobe",
    "ftrace_",
    "arch_ftrace_",
];

impl StackNames {
    pub fn new(map: StackTraceMap<MapData>) -> Self {
        Self {
            map,
            symbolizer: Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .build(),
            kernel: HashMap::new(),
            user: HashMap::new(),
            frames: HashMap::new(),
            maps: ProcMaps::default(),
        }
    }

    /// Reads the kernel's symbols now (and, given `pid`, that process's), before events
    /// arrive: the first naming parses kallsyms and the ELF files, which would otherwise hold
    /// up the first events (seconds under emulation), and with them whatever waits for them
    /// (`fill` acts on the writer's sleeps as they are seen).
    pub fn warm_up(&mut self, pid: Option<u32>) {
        const ANY_KERNEL_ADDRESS: u64 = 0xffff_ffff_8100_0000;
        let _ = self.symbolizer.symbolize_single(
            &Source::Kernel(Kernel::default()),
            Input::AbsAddr(ANY_KERNEL_ADDRESS),
        );
        if let Some(pid) = pid {
            self.met(pid);
            let here = Self::warm_up as *const () as u64;
            let _ = self.user_names(pid, &[here]);
        }
    }

    /// Notes process `pid`'s mappings when it is first met, so that its stacks can still be
    /// named (by file and offset) if it exits before they are read.
    pub fn met(&mut self, pid: u32) {
        self.maps.snapshot(pid);
    }

    /// The frames of the stacks `ids` taken in process `pid`; `None` when none was taken.
    /// `top`: the words at the top of its user stack then, where a caller the frame walk
    /// skipped is found.
    pub fn frames(&mut self, pid: u32, ids: &StackIds, top: Option<&[u64]>) -> Option<Rc<Frames>> {
        if !ids.any() {
            return None;
        }
        let scanned = top.map_or_else(Vec::new, |w| self.maps.return_addresses(pid, w));
        let key = (pid, (ids.kernel, ids.user), scanned.clone());
        if let Some(f) = self.frames.get(&key) {
            return Some(f.clone());
        }
        let kernel = self.kernel_frames(ids.kernel);
        let (addrs, names) = self.user_frames(pid, ids.user);
        // The frame-pointer walk misses the callers of code that keeps no frame pointer (a
        // libc syscall wrapper, Rust's std): the return addresses on the stack's top stand
        // in for them, up to the first one the walk found too, where the walk takes over.
        let mut user = names.iter().take(1).flatten().cloned().collect::<Vec<_>>();
        let mut resume = 1;
        for (n, r) in scanned.into_iter().enumerate() {
            if let Some(i) = addrs.iter().skip(1).position(|&a| a == r) {
                resume = i + 1;
                break;
            }
            if user.is_empty() || n >= MAX_SCANNED {
                break;
            }
            user.extend(self.user_names(pid, &[r - 1]).iter().flatten().cloned());
        }
        user.extend(names.iter().skip(resume).flatten().cloned());
        // A name twice in a row (an inlined copy reported with its function): once.
        user.dedup();
        let f = Rc::new(Frames {
            user,
            kernel: kernel.to_vec(),
        });
        self.frames.insert(key, f.clone());
        Some(f)
    }

    fn addresses(&self, id: u32) -> Vec<u64> {
        if id == NO_STACK {
            return Vec::new();
        }
        match self.map.get(&id, 0) {
            Ok(trace) => trace.frames().iter().map(|f| f.ip).collect(),
            Err(e) => {
                log::debug!("stack {id}: {e}");
                Vec::new()
            }
        }
    }

    fn kernel_frames(&mut self, id: u32) -> Rc<[String]> {
        if let Some(f) = self.kernel.get(&id) {
            return f.clone();
        }
        let addrs = self.addresses(id);
        let src = Source::Kernel(Kernel::default());
        let names: Vec<String> = match self.symbolizer.symbolize(&src, Input::AbsAddr(&addrs)) {
            Ok(syms) => addrs
                .iter()
                .zip(syms)
                .map(|(a, s)| match s {
                    Symbolized::Sym(s) => s.name.into_owned(),
                    Symbolized::Unknown(_) => format!("{a:#x}"),
                })
                .collect(),
            Err(e) => {
                log::debug!("kernel stack {id}: {e}");
                addrs.iter().map(|a| format!("{a:#x}")).collect()
            }
        };
        // The innermost frames are sockbuf's own program and the tracing machinery that
        // ran it: not where the task was.
        let own = names
            .iter()
            .take_while(|n| TRACING_FRAMES.iter().any(|p| n.starts_with(p)))
            .count();
        let names: Rc<[String]> = names[own..].into();
        self.kernel.insert(id, names.clone());
        names
    }

    /// A user stack's addresses and each one's names (see [`Self::user_names`]).
    fn user_frames(&mut self, pid: u32, id: u32) -> UserStack {
        if let Some(f) = self.user.get(&(pid, id)) {
            return f.clone();
        }
        let addrs = self.addresses(id);
        let names = self.user_names(pid, &addrs);
        let f = (Rc::from(addrs), names);
        self.user.insert((pid, id), f.clone());
        f
    }

    /// Each address's names, innermost first: the functions inlined at it (DWARF), then the
    /// function it is in.
    fn user_names(&mut self, pid: u32, addrs: &[u64]) -> Rc<[Vec<String>]> {
        let mut src = Process::new(pid.into());
        src.debug_syms = true;
        let live = self
            .symbolizer
            .symbolize(&Source::Process(src), Input::AbsAddr(addrs))
            .ok();
        addrs
            .iter()
            .enumerate()
            .map(|(i, &a)| match live.as_ref().and_then(|l| l.get(i)) {
                Some(Symbolized::Sym(s)) => s
                    .inlined
                    .iter()
                    .rev()
                    .map(|f| f.name.to_string())
                    .chain([s.name.to_string()])
                    .collect(),
                // Not in the live process (gone, or no symbol): its file and offset, from
                // the mappings noted when it was met, and that file's symbols.
                _ => vec![self.maps.name(&self.symbolizer, pid, a)],
            })
            .collect()
    }
}

/// What a session does with its events' stacks: names them, and sums them for `--folded`
/// and `--flamegraph`.
pub struct StackSink {
    pub names: StackNames,
    pub folded: Folded,
    /// Each thread's last user stack top, for its next event with stacks.
    tops: HashMap<u32, trace_common::StackTopEvent>,
    /// Each sleeping thread's frames, taken when it fell asleep: its wake-up event carries
    /// the same stack ids, without a stack top of its own.
    asleep: HashMap<u32, Rc<Frames>>,
    /// Nanoseconds asleep by stack.
    asleep_ns: HashMap<Rc<Frames>, u64>,
    /// `trace_common::stacks::ALL`: every send call's stack is summed too.
    all: bool,
}

impl StackSink {
    pub fn new(names: StackNames, mode: u32) -> Self {
        Self {
            names,
            folded: Folded::default(),
            tops: HashMap::new(),
            asleep: HashMap::new(),
            asleep_ns: HashMap::new(),
            all: mode == trace_common::stacks::ALL,
        }
    }

    /// The top of a thread's user stack, for its next event with stacks.
    pub fn on_top(&mut self, e: &trace_common::StackTopEvent) {
        self.tops.insert(e.hdr.tid, *e);
    }

    fn frames(&mut self, hdr: &trace_common::Header, ids: &StackIds) -> Option<Rc<Frames>> {
        self.names.met(hdr.pid);
        let top = self.tops.remove(&hdr.tid);
        self.names
            .frames(hdr.pid, ids, top.as_ref().map(|t| &t.words[..]))
    }

    /// A send call's stack, if it has one, summed under EAGAIN (and send calls).
    pub fn on_send(&mut self, e: &trace_common::SendEvent) -> Option<Rc<Frames>> {
        const EAGAIN: i64 = 11;
        let f = self.frames(&e.hdr, &e.stacks)?;
        let comm = crate::format::comm_str(&e.comm);
        if e.ret == -EAGAIN {
            self.folded.add(Weight::Eagain, comm, &f, 1);
        }
        if self.all {
            self.folded.add(Weight::Calls, comm, &f, 1);
        }
        Some(f)
    }

    /// A sleep's stack; its time is summed when it ends.
    pub fn on_block(&mut self, e: &trace_common::BlockEvent) -> Option<Rc<Frames>> {
        let tid = e.hdr.tid;
        if e.hdr.kind == trace_common::EventKind::BlockStart as u32 {
            let f = in_wait(self.frames(&e.hdr, &e.stacks)?);
            self.asleep.insert(tid, f.clone());
            return Some(f);
        }
        let f = match self.asleep.remove(&tid) {
            Some(f) => f,
            // Asleep before sockbuf saw it fall asleep.
            None => in_wait(self.frames(&e.hdr, &e.stacks)?),
        };
        {
            let comm = crate::format::comm_str(&e.comm);
            let ns = e.end_ns.saturating_sub(e.start_ns);
            self.folded.add(Weight::Asleep, comm, &f, ns);
            *self.asleep_ns.entry(f.clone()).or_default() += ns;
        }
        Some(f)
    }
}

/// Where every sleep sockbuf reports is (the model's definition of one).
const WAIT_FN: &str = "sk_stream_wait_memory";

/// A sleep's frames with [`WAIT_FN`] on top of the kernel's. Taken at that function's entry
/// (fentry, kprobe), some kernels' unwinders start at its caller (7.3 from a BPF trampoline:
/// `tcp_sendmsg_locked` first); from `sched_switch` the function is there already.
fn in_wait(f: Rc<Frames>) -> Rc<Frames> {
    if f.kernel.is_empty() || f.kernel.iter().any(|k| k == WAIT_FN) {
        return f;
    }
    let mut g = (*f).clone();
    g.kernel.insert(0, WAIT_FN.to_owned());
    Rc::new(g)
}

/// Where a writer slept longest: its stack, and the first function in it that is the
/// application's own (named `own…`; without `own`, the first not of libc or Rust's std).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SleptIn {
    pub function: String,
    pub asleep_ns: u64,
    pub frames: Frames,
}

impl StackSink {
    pub fn slept_in(&self, own: Option<&str>) -> Option<SleptIn> {
        let (f, &ns) = self.asleep_ns.iter().max_by_key(|(_, ns)| **ns)?;
        let function = f
            .user
            .iter()
            .find(|n| own.map_or(!is_runtime(n), |p| n.starts_with(p)))
            .or(f.user.first())?
            .clone();
        Some(SleptIn {
            function,
            asleep_ns: ns,
            frames: (**f).clone(),
        })
    }
}

/// A frame of the C library or Rust's standard library, not the application's.
fn is_runtime(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "__", "std::", "<std::", "core::", "<core::", "alloc::", "<alloc::", "libc.so",
    ];
    const LIBC: &[&str] = &["write", "writev", "send", "sendto", "sendmsg", "sendmmsg"];
    PREFIXES.iter().any(|p| name.starts_with(p)) || LIBC.contains(&name)
}
