//! The floors: programs that return at once, attached to the hooks a sockbuf mode runs at
//! every call. What they cost is what hooking those calls costs on this kernel before any
//! work is done, the least any tracer that hooks them can add here.

use anyhow::Context as _;
use aya::{Ebpf, programs::RawTracePoint};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    write::{Object, Symbol, SymbolSection},
};

/// The raw tracepoints `sockbuf trace --summary` runs at every call: each call's return, and
/// every syscall's exit (where a `sendfile()`, `splice()` or `sendmmsg()` ends, whose kernel
/// sends are pieces of one call: sockbuf attaches it in every mode).
pub const SUMMARY_HOOKS: &[&str] = &["sock_send_length", "sock_recv_length", "sys_exit"];

/// Those streaming (and `--summary --full`) runs per call on this kernel: the copy loop,
/// the return, the sleep, each segment received, each packet sent and each syscall's exit.
pub const STREAM_HOOKS: &[&str] = &[
    "tcp_sendmsg_locked",
    "sock_send_length",
    "sock_recv_length",
    "sched_switch",
    "tcp_probe",
    "net_dev_queue",
    "sys_exit",
];

/// The program on `hook` (bpftool shows its first 15 bytes).
fn name(hook: &str) -> String {
    format!("floor_{hook}")
}

/// `r0 = 0` (BPF_ALU64 | BPF_MOV | BPF_K) and `exit` (BPF_JMP | BPF_EXIT), 8 bytes each.
const RETURN_0: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];

/// An ELF object with one such program per hook, in the section naming aya loads from. Made
/// here rather than compiled: it needs no BPF toolchain and there is nothing to compile.
fn object(hooks: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    for hook in hooks {
        let section = format!("raw_tracepoint/{hook}").into_bytes();
        let id = obj.add_section(Vec::new(), section, SectionKind::Text);
        let value = obj.append_section_data(id, &RETURN_0, 8);
        obj.add_symbol(Symbol {
            name: name(hook).into_bytes(),
            value,
            size: RETURN_0.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(id),
            flags: SymbolFlags::None,
        });
    }
    let license = obj.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    obj.append_section_data(license, b"GPL\0", 1);
    obj.write().context("writing the floor's ELF object")
}

/// Loads and attaches a floor on `hooks`; it stays attached until the value is dropped.
pub fn attach(hooks: &[&str]) -> anyhow::Result<Ebpf> {
    let mut ebpf = Ebpf::load(&object(hooks)?).context("loading the floor's programs")?;
    for hook in hooks {
        let name = name(hook);
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
