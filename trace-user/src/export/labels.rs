//! The labels a socket's counts go under (`--group-by`), bounded: past `--max-series` label
//! sets, new ones go to one overflow set whose values are all `(other)`.

use std::collections::{HashMap, HashSet};

use crate::summary::SockSummary;

/// What sockets are grouped by: each a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum GroupBy {
    /// The command name of the task that made the socket's calls.
    Comm,
    /// The task's cgroup v2 path.
    Cgroup,
    /// The container id (12 hex digits) its cgroup names: docker, podman, containerd,
    /// CRI-O; empty on the host.
    Container,
    /// The Kubernetes pod UID its cgroup names; empty outside a pod.
    Pod,
    /// The socket's local port.
    Lport,
}

impl GroupBy {
    fn key(self) -> &'static str {
        match self {
            GroupBy::Comm => "comm",
            GroupBy::Cgroup => "cgroup",
            GroupBy::Container => "container",
            GroupBy::Pod => "pod",
            GroupBy::Lport => "lport",
        }
    }
}

/// A label set, in `--group-by` order.
pub type Labels = Vec<(&'static str, String)>;

/// Where a task's cgroup says it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub cgroup: String,
    pub container: String,
    pub pod: String,
}

/// Reads `/proc/PID/cgroup`'s unified (v2) line: `0::/path`.
fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .to_owned()
}

/// The container and pod a cgroup path names, as the runtimes name their cgroups:
/// `docker-<id>.scope`, `libpod-<id>.scope` (podman), `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, or a cgroupfs layout's bare `/<id>`; pods as `…pod<uid>.slice`
/// (systemd driver, `_` for `-`) or `/pod<uid>/` (cgroupfs driver).
pub fn place(cgroup: &str) -> Place {
    let mut p = Place {
        cgroup: cgroup.to_owned(),
        ..Place::default()
    };
    for part in cgroup.split('/') {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = ["docker-", "libpod-", "cri-containerd-", "crio-"]
            .iter()
            .find_map(|prefix| part.strip_prefix(prefix))
            .or_else(|| (part.len() == 64).then_some(part));
        if let Some(id) =
            id.filter(|id| id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            p.container = id[..12].to_owned();
        }
        let slice = part.strip_suffix(".slice").unwrap_or(part);
        if let Some(i) = slice.rfind("pod") {
            let uid = slice[i + 3..].replace('_', "-");
            if uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                p.pod = uid;
            }
        }
    }
    p
}

pub struct Grouping {
    by: Vec<GroupBy>,
    max_series: usize,
    series: HashSet<Labels>,
    /// Places by pid, read once per process.
    places: HashMap<u32, Place>,
    /// Sockets whose counts went to the overflow set since the start.
    pub overflowed: u64,
}

impl Grouping {
    pub fn new(by: &[GroupBy], max_series: usize) -> Self {
        let mut by = by.to_vec();
        by.dedup();
        Self {
            by,
            max_series,
            series: HashSet::new(),
            places: HashMap::new(),
            overflowed: 0,
        }
    }

    /// Forgets the places of processes not in `pids` (they may be reused by another).
    pub fn keep_places(&mut self, pids: &HashSet<u32>) {
        self.places.retain(|pid, _| pids.contains(pid));
    }

    /// The label set socket `s`'s counts go under.
    pub fn labels(&mut self, s: &SockSummary) -> Labels {
        let needs_place = self
            .by
            .iter()
            .any(|b| matches!(b, GroupBy::Cgroup | GroupBy::Container | GroupBy::Pod));
        let place = if needs_place && s.pid != 0 {
            self.places
                .entry(s.pid)
                .or_insert_with(|| place(&cgroup_of(s.pid)))
                .clone()
        } else {
            Place::default()
        };
        let labels: Labels = self
            .by
            .iter()
            .map(|&b| {
                let v = match b {
                    GroupBy::Comm => s.comm.clone(),
                    GroupBy::Cgroup => place.cgroup.clone(),
                    GroupBy::Container => place.container.clone(),
                    GroupBy::Pod => place.pod.clone(),
                    GroupBy::Lport => s.addrs.lport.to_string(),
                };
                (b.key(), v)
            })
            .collect();
        if self.series.contains(&labels) {
            return labels;
        }
        if self.series.len() < self.max_series {
            self.series.insert(labels.clone());
            return labels;
        }
        self.overflowed += 1;
        self.by
            .iter()
            .map(|&b| (b.key(), "(other)".to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::place;

    #[test]
    fn containers_and_pods_from_cgroup_paths() {
        let id = "4f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
        let docker = place(&format!("/system.slice/docker-{id}.scope"));
        assert_eq!(docker.container, "4f1b2c3d4e5f");
        assert_eq!(docker.pod, "");
        assert_eq!(
            place(&format!("/machine.slice/libpod-{id}.scope/container")).container,
            "4f1b2c3d4e5f"
        );
        let k8s = place(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f5e2a4c_1b2d_4c6e_8f90_123456789abc.slice/cri-containerd-{id}.scope"
        ));
        assert_eq!(k8s.pod, "0f5e2a4c-1b2d-4c6e-8f90-123456789abc");
        assert_eq!(k8s.container, "4f1b2c3d4e5f");
        let cgroupfs = place(&format!(
            "/kubepods/besteffort/pod0f5e2a4c-1b2d-4c6e-8f90-123456789abc/{id}"
        ));
        assert_eq!(cgroupfs.pod, "0f5e2a4c-1b2d-4c6e-8f90-123456789abc");
        assert_eq!(cgroupfs.container, "4f1b2c3d4e5f");
        let host = place("/user.slice/user-0.slice/session-3.scope");
        assert_eq!((host.container.as_str(), host.pod.as_str()), ("", ""));
    }
}
