//! Which process holds a socket sockbuf saw no call on (idle since `top` started, or a
//! writer stuck in a call begun before): found as `ss -p` finds it, by the socket's inode
//! among the file descriptors in /proc. Looked up only for such sockets, and remembered.

use std::{
    collections::{HashMap, HashSet},
    fs,
};

/// How many refreshes a socket whose owner was not found waits before the next scan (it may
/// have none any more: closed by its process, still draining).
const RETRY_EVERY: u32 = 5;

#[derive(Default)]
pub struct Owners {
    known: HashMap<u64, (u32, String)>,
    /// Refreshes until the next scan for inodes not found.
    wait: u32,
}

impl Owners {
    /// The owner (pid, comm) of each of `inodes` that can be found.
    pub fn of(&mut self, inodes: &HashSet<u64>) -> &HashMap<u64, (u32, String)> {
        self.known.retain(|ino, _| inodes.contains(ino));
        let missing: HashSet<u64> = inodes
            .iter()
            .copied()
            .filter(|i| !self.known.contains_key(i))
            .collect();
        if missing.is_empty() {
            return &self.known;
        }
        if self.wait > 0 {
            self.wait -= 1;
            return &self.known;
        }
        scan(&missing, &mut self.known);
        if inodes.iter().any(|i| !self.known.contains_key(i)) {
            self.wait = RETRY_EVERY;
        }
        &self.known
    }
}

/// Every process's descriptors, until each of `wanted` is found.
fn scan(wanted: &HashSet<u64>, found: &mut HashMap<u64, (u32, String)>) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    let mut left = wanted.len();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue; // exited, or a kernel thread
        };
        for fd in fds.flatten() {
            let Ok(link) = fs::read_link(fd.path()) else {
                continue;
            };
            let ino = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u64>().ok());
            if let Some(ino) = ino.filter(|i| wanted.contains(i) && !found.contains_key(i)) {
                let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                found.insert(ino, (pid, comm.trim_end().to_owned()));
                left -= 1;
                if left == 0 {
                    return;
                }
            }
        }
    }
}
