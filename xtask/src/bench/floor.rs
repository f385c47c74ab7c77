//! The floors: programs that return at once, attached to the hooks a sockbuf mode runs at
//! every call. What they cost is what hooking those calls costs on this kernel before any
//! work is done, the least any tracer that hooks them can add here.
//!
//! Beside them, the least counting there is: on the calls' returns, one map lookup and two
//! adds (calls and bytes), no filter, no identity, no histogram. A summary can do no less,
//! so where these already add more than a target allows, no summary meets it here.

use anyhow::Context as _;
use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{BtfTracePoint, RawTracePoint, TracePoint},
};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind,
    SymbolScope,
    write::{Object, Relocation, Symbol, SymbolId, SymbolSection},
};

use super::floor_btf;

/// The tracepoints `sockbuf trace --summary` runs at every call: each call's return; and
/// those it hooks where a `sendfile()`, `splice()`, `sendmmsg()` or `recvmmsg()` begins and
/// ends, whose kernel calls are pieces of one call. Where the kernel does not preempt BPF
/// programs (this machine, the bench's home) those are the four syscalls' own entry and exit
/// tracepoints, which the workload's writes never run, but which, once enabled, send every
/// syscall through the kernel's slower entry and exit path; where it does, sockbuf hooks
/// every syscall's exit (`sys_exit`), about 55 ns a syscall more than these floors.
pub const SUMMARY_HOOKS: &[&str] = &[
    "sock_send_length",
    "sock_recv_length",
    "sys_exit_sendfile64",
    "sys_exit_splice",
    "sys_exit_sendmmsg",
    "sys_exit_recvmmsg",
    "sys_enter_sendfile64",
    "sys_enter_splice",
    "sys_enter_sendmmsg",
    "sys_enter_recvmmsg",
];

/// Those streaming (and `--summary --full`) runs per call on this kernel: the copy loop,
/// the return, the sleep, each segment received and each packet sent; and the pieced
/// calls' exits as above (their entries are `--summary`'s alone).
pub const STREAM_HOOKS: &[&str] = &[
    "tcp_sendmsg_locked",
    "sock_send_length",
    "sock_recv_length",
    "sched_switch",
    "tcp_probe",
    "net_dev_queue",
    "sys_exit_sendfile64",
    "sys_exit_splice",
    "sys_exit_sendmmsg",
    "sys_exit_recvmmsg",
];

/// What the programs on the calls' returns (`sock_send_length`, `sock_recv_length`) do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Nothing: return at once.
    None,
    /// Count calls and bytes in one per-CPU array slot (the array lookup the verifier inlines).
    PerCpu,
    /// Count calls and bytes per socket: a hash lookup keyed by the socket's address (the
    /// entry made at the socket's first call).
    PerSocket,
    /// The same in socket-local storage, from BTF-typed tracepoints (the socket a typed
    /// pointer): the kernel keeps the socket's storage in the socket, no hash on the way.
    SkStorage,
    /// The least `--summary -c` itself can do: beside `SkStorage`'s storage, the thread's
    /// id (a helper call), its slot (an array the verifier inlines) for the filter's
    /// remembered verdict and the pieced-call mark, and the bytes counted into a log2
    /// histogram's bucket, as `--summary` counts them. Every thread passes here, the reader
    /// too, where `-c sbwork` stops the reader at its slot.
    Summary,
}

/// The hooks counted on: the calls' returns.
fn counts(hook: &str) -> bool {
    matches!(hook, "sock_send_length" | "sock_recv_length")
}

/// The classic tracepoints among the hooks: syscalls' own entries and exits (the others
/// are raw).
fn syscall_tracepoint(hook: &str) -> bool {
    hook.starts_with("sys_exit_") || hook.starts_with("sys_enter_")
}

/// The program on `hook` (bpftool shows its first 15 bytes).
fn name(hook: &str) -> String {
    format!("floor_{hook}")
}

/// One BPF instruction: opcode, registers (`dst | src << 4`), offset, immediate.
const fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [op, dst | (src << 4), o[0], o[1], i[0], i[1], i[2], i[3]]
}

const EXIT: [u8; 8] = insn(0x95, 0, 0, 0, 0);
/// `r0 = 0` (BPF_ALU64 | BPF_MOV | BPF_K).
const R0_0: [u8; 8] = insn(0xb7, 0, 0, 0, 0);

/// The hook's arguments the counting programs use: the socket and the call's return.
const ARGS: [[u8; 8]; 2] = [
    insn(0x79, 6, 1, 0, 0), // r6 = args[0]: the socket
    insn(0x79, 7, 1, 8, 0), // r7 = args[1]: the call's return
];

/// The count, into the value `r0` points at: one call, and `r7` (its return) bytes.
const ADD: [[u8; 8]; 3] = [
    insn(0xb7, 1, 0, 0, 1), // r1 = 1
    insn(0xdb, 0, 1, 0, 0), // lock *(u64 *)(r0 + 0) += r1
    insn(0xdb, 0, 7, 8, 0), // lock *(u64 *)(r0 + 8) += r7
];

/// `r1 = <map>`: a 16-byte load the loader relocates to the map's descriptor.
const LD_MAP: [[u8; 8]; 2] = [insn(0x18, 1, 0, 0, 0), insn(0, 0, 0, 0, 0)];

/// The counting program, and the indexes of its two map loads. The socket (the first
/// argument) is the key: a per-CPU array reads only its low 4 bytes, which `Work::PerCpu`
/// zeroes instead. A hash miss makes the entry (zeroed) and counts from the next call.
fn counting(work: Work) -> (Vec<[u8; 8]>, [usize; 2]) {
    let key = if work == Work::PerSocket {
        insn(0x7b, 10, 6, -8, 0) // *(u64 *)(r10 - 8) = r6
    } else {
        insn(0x7a, 10, 0, -8, 0) // *(u64 *)(r10 - 8) = 0
    };
    let mut p = ARGS.to_vec();
    p.extend([
        key,
        insn(0xbf, 2, 10, 0, 0), // r2 = r10
        insn(0x07, 2, 0, 0, -8), // r2 += -8
    ]);
    let first = p.len();
    p.extend(LD_MAP);
    p.extend([
        insn(0x85, 0, 0, 0, 1), // call bpf_map_lookup_elem
        insn(0x15, 0, 0, 4, 0), // if r0 == 0 goto the miss
    ]);
    p.extend(ADD);
    p.extend([
        insn(0x05, 0, 0, 10, 0),   // goto the end
        insn(0x7a, 10, 0, -24, 0), // the miss: a zeroed value at r10 - 24
        insn(0x7a, 10, 0, -16, 0),
        insn(0xbf, 3, 10, 0, 0), // r3 = r10 - 24: the value
        insn(0x07, 3, 0, 0, -24),
        insn(0xbf, 2, 10, 0, 0), // r2 = r10 - 8: the key
        insn(0x07, 2, 0, 0, -8),
    ]);
    let second = p.len();
    p.extend(LD_MAP);
    p.extend([
        insn(0xb7, 4, 0, 0, 0), // r4 = BPF_ANY
        insn(0x85, 0, 0, 0, 2), // call bpf_map_update_elem
        R0_0,
        EXIT,
    ]);
    (p, [first, second])
}

/// The socket's storage (`r6`), made zeroed at its first call, into `r0`; after `LD_MAP`.
const STORAGE_GET: [[u8; 8]; 4] = [
    insn(0xbf, 2, 6, 0, 0),   // r2 = the socket
    insn(0xb7, 3, 0, 0, 0),   // r3 = NULL: a zeroed value
    insn(0xb7, 4, 0, 0, 1),   // r4 = BPF_SK_STORAGE_GET_F_CREATE
    insn(0x85, 0, 0, 0, 107), // call bpf_sk_storage_get
];

/// The socket-local storage program: `bpf_sk_storage_get` with `F_CREATE` makes the
/// socket's zeroed entry at its first call; the index of its map load.
fn sk_storage() -> (Vec<[u8; 8]>, [usize; 1]) {
    let mut p = ARGS.to_vec();
    let load = p.len();
    p.extend(LD_MAP);
    p.extend(STORAGE_GET);
    p.push(insn(0x15, 0, 0, 3, 0)); // if r0 == 0 goto the end
    p.extend(ADD);
    p.extend([R0_0, EXIT]);
    (p, [load])
}

/// The slots of [`Work::Summary`]'s threads (a legacy `maps` array), by thread id modulo.
const THREADS: &str = "FLOOR_THREADS";
const THREAD_SLOTS: u32 = 16384;
/// Its storage value: the bytes, then the buckets.
const SUMMARY_WORDS: u32 = 1 + 32;

/// [`Work::Summary`]'s program; the indexes of its loads of the threads' array and of the
/// socket-local storage.
fn summary() -> (Vec<[u8; 8]>, [usize; 2]) {
    let mut p = ARGS.to_vec();
    p.extend([
        insn(0x85, 0, 0, 0, 14), // call bpf_get_current_pid_tgid
        insn(0xbf, 8, 0, 0, 0),  // r8 = the thread's id
        insn(0xbf, 1, 8, 0, 0),  // r1 = r8
        insn(0x57, 1, 0, 0, (THREAD_SLOTS - 1) as i32), // r1 &= slots - 1
        insn(0x63, 10, 1, -4, 0), // *(u32 *)(r10 - 4) = r1: the key
        insn(0xbf, 2, 10, 0, 0), // r2 = r10 - 4
        insn(0x07, 2, 0, 0, -4),
    ]);
    let threads = p.len();
    p.extend(LD_MAP);
    let end = |p: &Vec<[u8; 8]>, at: usize| (p.len() - at - 1) as i16;
    p.extend([insn(0x85, 0, 0, 0, 1)]); // call bpf_map_lookup_elem (inlined)
    let miss = p.len();
    p.extend([
        insn(0x15, 0, 0, 0, 0), // if r0 == 0 goto the end (patched)
        insn(0x79, 1, 0, 0, 0), // r1 = the slot's remembered thread
        insn(0x1d, 1, 8, 1, 0), // if r1 == r8 skip the next: it passed before
        insn(0x7b, 0, 8, 0, 0), // remember it (its name passes: every thread here)
        insn(0x79, 1, 0, 8, 0), // r1 = the slot's mark of a pieced call
    ]);
    let marked = p.len();
    p.push(insn(0x55, 1, 0, 0, 0)); // if r1 != 0 goto the end (patched)
    let storage = p.len();
    p.extend(LD_MAP);
    p.extend(STORAGE_GET);
    let none = p.len();
    p.extend([
        insn(0x15, 0, 0, 0, 0), // if r0 == 0 goto the end (patched)
        insn(0xdb, 0, 7, 0, 0), // lock *(u64 *)(r0 + 0) += r7: the bytes
        // r3 = log2(r7) + 1, a binary search as `--summary`'s (no count-leading-zeros), for
        // 1 <= r7 < 2^32: the workload's writes (0, errors and larger returns, which
        // `--summary` tells apart, land in wrong buckets here, which costs the same).
        insn(0xbf, 2, 7, 0, 0),
        insn(0xb7, 3, 0, 0, 1),
    ]);
    for shift in [16, 8, 4, 2] {
        p.extend([
            insn(0xa5, 2, 0, 2, 1 << shift), // if r2 < 1 << shift skip two
            insn(0x77, 2, 0, 0, shift),      // r2 >>= shift
            insn(0x07, 3, 0, 0, shift),      // r3 += shift
        ]);
    }
    p.extend([
        insn(0xa5, 2, 0, 1, 2),  // if r2 < 2 skip one
        insn(0x07, 3, 0, 0, 1),  // r3 += 1
        insn(0x57, 3, 0, 0, 31), // r3 &= 31: the buckets
        insn(0x67, 3, 0, 0, 3),  // r3 <<= 3
        insn(0x0f, 0, 3, 0, 0),  // r0 += r3
        insn(0xb7, 1, 0, 0, 1),  // r1 = 1
        insn(0xdb, 0, 1, 8, 0),  // lock *(u64 *)(r0 + 8) += r1: the bucket
    ]);
    for at in [miss, marked, none] {
        let off = end(&p, at).to_le_bytes();
        p[at][2..4].copy_from_slice(&off);
    }
    p.extend([R0_0, EXIT]);
    (p, [threads, storage])
}

/// The map the counting programs share, as a legacy `maps` section entry (`bpf_map_def`:
/// type, key size, value size, max entries, flags, id, pinning).
fn map_def(work: Work) -> [u8; 28] {
    let (kind, key_size, entries) = match work {
        Work::PerCpu => (6u32, 4u32, 1u32), // BPF_MAP_TYPE_PERCPU_ARRAY
        Work::Summary => (2, 4, THREAD_SLOTS), // BPF_MAP_TYPE_ARRAY: the threads' slots
        _ => (1, 8, 4096),                  // BPF_MAP_TYPE_HASH
    };
    let mut d = [0u8; 28];
    for (i, v) in [kind, key_size, 16, entries].into_iter().enumerate() {
        d[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    d
}

/// Adds a global symbol `name` for `size` bytes at `value` in `section`.
fn symbol(
    obj: &mut Object<'_>,
    name: &str,
    section: object::write::SectionId,
    (value, size): (u64, u64),
    kind: SymbolKind,
) -> SymbolId {
    obj.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value,
        size,
        kind,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    })
}

/// Whether `work` counts from BTF-typed hooks into socket-local storage.
fn typed(work: Work) -> bool {
    matches!(work, Work::SkStorage | Work::Summary)
}

/// The maps `work`'s programs use, as symbols: socket-local storage (BTF-defined, in
/// `.maps`), and a legacy `maps` entry (the counts, or [`Work::Summary`]'s threads).
fn maps(obj: &mut Object<'_>, work: Work) -> (Option<SymbolId>, Option<SymbolId>) {
    let storage = typed(work).then(|| {
        let words = if work == Work::Summary {
            SUMMARY_WORDS
        } else {
            2
        };
        let maps = obj.add_section(Vec::new(), b".maps".to_vec(), SectionKind::Data);
        let at = obj.append_section_data(maps, &[0; floor_btf::DEF_SIZE as usize], 8);
        let btf = obj.add_section(Vec::new(), b".BTF".to_vec(), SectionKind::Metadata);
        obj.append_section_data(btf, &floor_btf::section(words), 4);
        let size = (at, u64::from(floor_btf::DEF_SIZE));
        symbol(obj, floor_btf::MAP, maps, size, SymbolKind::Data)
    });
    let legacy = matches!(work, Work::PerCpu | Work::PerSocket | Work::Summary).then(|| {
        let name = if work == Work::Summary {
            THREADS
        } else {
            "FLOOR_COUNTS"
        };
        let maps = obj.add_section(Vec::new(), b"maps".to_vec(), SectionKind::Data);
        let at = obj.append_section_data(maps, &map_def(work), 4);
        symbol(obj, name, maps, (at, 28), SymbolKind::Data)
    });
    (storage, legacy)
}

/// An ELF object with one program per hook, in the section naming aya loads from. Made here
/// rather than compiled: it needs no BPF toolchain and there is little to compile.
fn object(hooks: &[&str], work: Work) -> anyhow::Result<Vec<u8>> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let (storage, legacy) = maps(&mut obj, work);
    for hook in hooks {
        let typed = typed(work) && counts(hook);
        let kind = match hook {
            _ if typed => "tp_btf",
            _ if syscall_tracepoint(hook) => "tracepoint/syscalls",
            _ => "raw_tracepoint",
        };
        let id = obj.add_section(
            Vec::new(),
            format!("{kind}/{hook}").into_bytes(),
            SectionKind::Text,
        );
        // The program, and each of its map loads with the map it loads.
        let (code, loads) = match (work, counts(hook)) {
            (_, false) | (Work::None, _) => (vec![R0_0, EXIT], Vec::new()),
            (Work::SkStorage, true) => {
                let (code, [load]) = sk_storage();
                (code, vec![(load, storage)])
            }
            (Work::Summary, true) => {
                let (code, [threads, load]) = summary();
                (code, vec![(threads, legacy), (load, storage)])
            }
            (Work::PerCpu | Work::PerSocket, true) => {
                let (code, loads) = counting(work);
                (code, loads.map(|i| (i, legacy)).to_vec())
            }
        };
        let value = obj.append_section_data(id, code.as_flattened(), 8);
        for (i, map) in loads {
            obj.add_relocation(
                id,
                Relocation {
                    offset: value + 8 * i as u64,
                    symbol: map.context("a map load without a map")?,
                    addend: 0,
                    flags: RelocationFlags::Elf { r_type: 1 }, // R_BPF_64_64
                },
            )?;
        }
        let size = 8 * code.len() as u64;
        symbol(&mut obj, &name(hook), id, (value, size), SymbolKind::Text);
    }
    let license = obj.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    obj.append_section_data(license, b"GPL\0", 1);
    obj.write().context("writing the floor's ELF object")
}

/// Loads and attaches a floor on `hooks`; it stays attached until the value is dropped.
pub fn attach(hooks: &[&str], work: Work) -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(&object(hooks, work)?).context("loading the floor's programs")?;
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
    for hook in hooks {
        let name = name(hook);
        if typed(work) && counts(hook) {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(&name)
                .context("floor program missing from its object")?
                .try_into()?;
            prog.load(hook, &btf)
                .with_context(|| format!("loading {name}"))?;
            prog.attach()
                .with_context(|| format!("attaching {name} to {hook}"))?;
            continue;
        }
        if syscall_tracepoint(hook) {
            let prog: &mut TracePoint = ebpf
                .program_mut(&name)
                .context("floor program missing from its object")?
                .try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
            prog.attach("syscalls", hook)
                .with_context(|| format!("attaching {name} to {hook}"))?;
            continue;
        }
        let prog: &mut RawTracePoint = ebpf
            .program_mut(&name)
            .context("floor program missing from its object")?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
        prog.attach(hook)
            .with_context(|| format!("attaching {name} to {hook}"))?;
    }
    Ok(ebpf)
}

/// Calls the counting programs counted (`None`: a floor that does not count): the bench
/// checks them against the workload's writes, so a counting floor that counted nothing
/// cannot pass for a cheap one.
pub fn counted(ebpf: &mut Ebpf) -> anyhow::Result<Option<u64>> {
    // Socket-local storage cannot be listed from user space: its counts go unchecked; the
    // least summary's threads' slots at least show that its programs ran (each remembers
    // the id of the thread it passed).
    if let Some(map) = ebpf.map(THREADS) {
        let slots = Array::<&MapData, [u64; 2]>::try_from(map)?;
        anyhow::ensure!(
            slots.iter().any(|v| v.is_ok_and(|v| v[0] != 0)),
            "the least summary's programs remembered no thread: they never ran"
        );
        return Ok(None);
    }
    let Some(map) = ebpf.map_mut("FLOOR_COUNTS") else {
        return Ok(None);
    };
    let calls = |v: [u64; 2]| v[0];
    if let Ok(a) = PerCpuArray::<&mut MapData, [u64; 2]>::try_from(&mut *map) {
        return Ok(Some(a.get(&0, 0)?.iter().map(|&v| calls(v)).sum()));
    }
    let h = HashMap::<&mut MapData, u64, [u64; 2]>::try_from(map)?;
    let mut n = 0;
    for kv in h.iter() {
        n += calls(kv?.1);
    }
    Ok(Some(n))
}
