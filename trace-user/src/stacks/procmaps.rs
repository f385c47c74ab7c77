//! Processes' file mappings, noted when sockbuf first meets a process: a stack read after
//! the process exited is still named by file and offset (and by that file's symbols while
//! the file is there), where the live process can no longer be asked.

use std::{collections::HashMap, path::PathBuf};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};

/// One file-backed mapping of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapping {
    start: u64,
    end: u64,
    /// The file offset mapped at `start`.
    offset: u64,
    /// Mapped executable.
    exec: bool,
    path: PathBuf,
}

/// Mappings by pid. Bounded: past [`MAX_PROCESSES`] the oldest notes are dropped.
#[derive(Default)]
pub struct ProcMaps {
    by_pid: HashMap<u32, Vec<Mapping>>,
    order: std::collections::VecDeque<u32>,
    /// Whether the word at (pid, address) is a return address (see [`Self::return_addresses`]).
    returns: HashMap<(u32, u64), bool>,
}

const MAX_PROCESSES: usize = 4096;

impl ProcMaps {
    /// Notes `pid`'s mappings, once.
    pub fn snapshot(&mut self, pid: u32) {
        if self.by_pid.contains_key(&pid) {
            return;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        if self.order.len() >= MAX_PROCESSES
            && let Some(old) = self.order.pop_front()
        {
            self.by_pid.remove(&old);
        }
        self.order.push_back(pid);
        self.by_pid.insert(pid, parse(&text));
    }

    /// Address `addr` of process `pid` named from its noted mappings: the covering file's
    /// symbol, else `file+0xoffset`, else `0xaddr`.
    pub fn name(&mut self, symbolizer: &Symbolizer, pid: u32, addr: u64) -> String {
        self.snapshot(pid);
        let Some(m) = self
            .by_pid
            .get(&pid)
            .and_then(|maps| maps.iter().find(|m| (m.start..m.end).contains(&addr)))
        else {
            return format!("{addr:#x}");
        };
        let offset = addr - m.start + m.offset;
        let src = Source::Elf(Elf::new(&m.path));
        match symbolizer.symbolize_single(&src, Input::FileOffset(offset)) {
            Ok(Symbolized::Sym(s)) => s.name.into_owned(),
            _ => {
                let file = m.path.file_name().unwrap_or(m.path.as_os_str());
                format!("{}+{offset:#x}", file.to_string_lossy())
            }
        }
    }
}

impl ProcMaps {
    /// The words of `words` (the top of `pid`'s user stack, innermost first) that are return
    /// addresses: they point into an executable file mapping, just past a call instruction
    /// there. A stale one left in a frame's unused slot passes too: the frames found this
    /// way are a good guess, not a proof.
    pub fn return_addresses(&mut self, pid: u32, words: &[u64]) -> Vec<u64> {
        self.snapshot(pid);
        let Some(maps) = self.by_pid.get(&pid) else {
            return Vec::new();
        };
        let returns = &mut self.returns;
        words
            .iter()
            .copied()
            .filter(|&w| {
                *returns.entry((pid, w)).or_insert_with(|| {
                    maps.iter()
                        .find(|m| m.exec && (m.start..m.end).contains(&w))
                        .is_some_and(|m| after_call(m, w - m.start + m.offset))
                })
            })
            .collect()
    }
}

/// Whether the bytes before file offset `offset` of `m`'s file end with an x86-64 call: a
/// direct `call rel32` (E8, 5 bytes) or an indirect `call r/m` (FF /2: 2, 3, 6 or 7 bytes).
fn after_call(m: &Mapping, offset: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 7];
    let Some(at) = offset.checked_sub(7) else {
        return false;
    };
    let Ok(file) = std::fs::File::open(&m.path) else {
        return false;
    };
    if file.read_exact_at(&mut b, at).is_err() {
        return false;
    }
    let indirect = |i: usize| b[i] == 0xff && b[i + 1] & 0x38 == 0x10;
    b[2] == 0xe8 || indirect(5) || indirect(4) || indirect(1) || indirect(0)
}

/// The file-backed lines of a maps file: `start-end perms offset dev inode path`.
fn parse(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (range, perms, offset) = (w.next()?, w.next()?, w.next()?);
            let (_dev, _inode, path) = (w.next()?, w.next()?, w.next()?);
            if !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                exec: perms.contains('x'),
                path: PathBuf::from(path),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_mappings_of_a_maps_file() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 1234 /usr/bin/app
55d0c0a01000-55d0c0a05000 r-xp 00001000 fe:01 1234 /usr/bin/app
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7ffd1000-7ffd2000 r-xp 00000000 00:00 0 [vdso]
";
        let maps = parse(text);
        assert_eq!(maps.len(), 2);
        assert_eq!(
            maps[1],
            Mapping {
                start: 0x55d0c0a01000,
                end: 0x55d0c0a05000,
                offset: 0x1000,
                exec: true,
                path: "/usr/bin/app".into(),
            }
        );
    }
}
