//! The labels a socket's counts go under (`--group-by`), bounded: past `--max-series` label
//! sets, new ones go to one overflow set whose values are all `(other)`.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

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
    /// The Kubernetes pod its cgroup names: two labels, `namespace` and `pod` (the pod's
    /// name, from the kubelet's pod log directories; its UID where none names it).
    Pod,
    /// The socket's local port.
    Lport,
}

impl GroupBy {
    fn keys(self) -> &'static [&'static str] {
        match self {
            GroupBy::Comm => &["comm"],
            GroupBy::Cgroup => &["cgroup"],
            GroupBy::Container => &["container"],
            GroupBy::Pod => &["namespace", "pod"],
            GroupBy::Lport => &["lport"],
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
    /// The pod's UID.
    pub pod: String,
}

/// Where task `pid` runs, from `/proc/PID/cgroup`: its unified (v2) line `0::/path`; on a
/// hybrid host whose runtime names containers only in the v1 hierarchies, the container and
/// pod from the first v1 line that names them.
fn place_of(pid: u32) -> Place {
    let lines = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let v2 = lines
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("");
    let mut p = place(v2);
    if p.container.is_empty() && p.pod.is_empty() {
        let v1 = lines
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .map(place)
            .find(|v1| !v1.container.is_empty() || !v1.pod.is_empty());
        if let Some(v1) = v1 {
            (p.container, p.pod) = (v1.container, v1.pod);
        }
    }
    p
}

/// Pod names and namespaces by UID, from the kubelet's pod log directories
/// (`/var/log/pods/<namespace>_<name>_<uid>`): the cgroup names only the UID.
struct PodNames {
    dir: PathBuf,
    by_uid: HashMap<String, (String, String)>,
    /// UIDs a fresh read did not name (the kubelet makes a pod's directory before its
    /// containers start, so they stay unnamed): not read again for them.
    unnamed: HashSet<String>,
}

impl PodNames {
    /// `(namespace, name)` of pod `uid`; the directory is read again for a UID not met yet.
    fn get(&mut self, uid: &str) -> Option<&(String, String)> {
        if !self.by_uid.contains_key(uid) && !self.unnamed.contains(uid) {
            self.by_uid = std::fs::read_dir(&self.dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| pod_dir_name(&e.file_name().to_string_lossy()))
                .collect();
            if !self.by_uid.contains_key(uid) {
                self.unnamed.insert(uid.to_owned());
            }
        }
        self.by_uid.get(uid)
    }
}

/// `namespace_name_uid` → (uid, (namespace, name)); neither a namespace nor a pod name may
/// hold `_`, so the split is unambiguous.
fn pod_dir_name(dir: &str) -> Option<(String, (String, String))> {
    let mut parts = dir.splitn(3, '_');
    let (ns, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
    (uid.len() == 36 && !ns.is_empty() && !name.is_empty())
        .then(|| (uid.to_owned(), (ns.to_owned(), name.to_owned())))
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
    pods: PodNames,
    /// Sockets whose counts went to the overflow set since the start.
    pub overflowed: u64,
}

impl Grouping {
    /// `pod_logs`: the kubelet's pod log directory, where pods' names are found.
    pub fn new(by: &[GroupBy], max_series: usize, pod_logs: &Path) -> Self {
        let mut by = by.to_vec();
        by.dedup();
        Self {
            by,
            max_series,
            series: HashSet::new(),
            places: HashMap::new(),
            pods: PodNames {
                dir: pod_logs.to_owned(),
                by_uid: HashMap::new(),
                unnamed: HashSet::new(),
            },
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
                .or_insert_with(|| place_of(s.pid))
                .clone()
        } else {
            Place::default()
        };
        let mut labels = Labels::new();
        for &b in &self.by {
            let values = match b {
                GroupBy::Comm => vec![s.comm.clone()],
                GroupBy::Cgroup => vec![place.cgroup.clone()],
                GroupBy::Container => vec![place.container.clone()],
                GroupBy::Pod if place.pod.is_empty() => vec![String::new(), String::new()],
                GroupBy::Pod => match self.pods.get(&place.pod) {
                    Some((ns, name)) => vec![ns.clone(), name.clone()],
                    None => vec![String::new(), place.pod.clone()],
                },
                GroupBy::Lport => vec![s.addrs.lport.to_string()],
            };
            labels.extend(b.keys().iter().copied().zip(values));
        }
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
            .flat_map(|b| b.keys())
            .map(|&k| (k, "(other)".to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{place, pod_dir_name};

    #[test]
    fn pod_names_from_the_kubelets_log_directories() {
        let uid = "0f5e2a4c-1b2d-4c6e-8f90-123456789abc";
        assert_eq!(
            pod_dir_name(&format!("kube-system_sockbuf-7xk2p_{uid}")),
            Some((uid.into(), ("kube-system".into(), "sockbuf-7xk2p".into())))
        );
        assert_eq!(pod_dir_name("kube-system_sockbuf"), None);
        assert_eq!(pod_dir_name(&format!("_x_{uid}")), None);
    }

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
