//! `deploy/`, as users deploy it: the Containerfile built by podman (offline: the base is a
//! local image of the libraries sockbuf links) and the image run the way the DaemonSet runs
//! it — the capabilities, seccomp profile, mounts, host namespaces and arguments read from
//! `daemonset.yaml` itself — while a workload container writes known bytes; the manifests
//! through `kubectl kustomize` and Kubernetes' own API types; the systemd unit through
//! `systemd-analyze verify`.

mod common;

use std::{
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use common::{guard::ScratchDir, metrics, *};
use k8s_openapi::api::apps::v1::DaemonSet;
use serde::Deserialize;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs `cmd`, panicking with its stderr unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} (installed by cargo xtask test's set-up): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The objects `kubectl kustomize deploy/kubernetes` makes, as JSON values.
fn manifests() -> Vec<Value> {
    let out = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes")));
    let yaml = String::from_utf8(out.stdout).unwrap();
    yaml_serde::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).expect("YAML kubectl wrote"))
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// The DaemonSet's capabilities, as the kernel names them (`CAP_BPF`).
fn daemonset_caps(ds: &Value) -> Vec<String> {
    let caps = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"];
    assert_eq!(
        strings(&caps["drop"]),
        ["ALL"],
        "the DaemonSet drops all first"
    );
    strings(&caps["add"])
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect()
}

#[test]
fn deploy_manifests_are_kubernetes_objects() {
    let objects = manifests();
    let ds = of_kind(&objects, "DaemonSet");
    // Kubernetes' API types keep only the fields they know, where they belong: a misspelt
    // or misplaced field is missing after the round trip.
    let typed: DaemonSet = serde_json::from_value(ds.clone()).expect("a DaemonSet");
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, ds,
        "fields Kubernetes does not know in the DaemonSet:\nwritten {ds:#}\nknown {back:#}"
    );
    let spec = typed.spec;
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(
        pod.host_pid,
        Some(true),
        "hostPID: pids and /proc are the node's"
    );
    assert_eq!(
        spec.selector.match_labels,
        spec.template.metadata.and_then(|m| m.labels),
        "the selector matches the pods' labels"
    );
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(args[0], "export", "the DaemonSet runs sockbuf export");
    // The PodMonitor (a CRD, not in Kubernetes' types) scrapes those pods' port.
    let monitor = of_kind(&objects, "PodMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        ds["spec"]["selector"]["matchLabels"]
    );
    let port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
        .as_str()
        .unwrap();
    let ports = container.ports.clone().unwrap_or_default();
    let served = ports
        .iter()
        .find(|p| p.name.as_deref() == Some(port))
        .unwrap_or_else(|| panic!("the PodMonitor's port {port} is not the container's"));
    assert!(
        args.iter()
            .any(|a| a.ends_with(&format!(":{}", served.container_port))),
        "sockbuf listens on the port the pod declares: {args:?}"
    );
}

#[test]
fn deploy_systemd_unit_passes_systemd_analyze() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/sockbuf-export.service"))
        .expect("deploy/systemd/sockbuf-export.service");
    let dir = ScratchDir::new("unit");
    let path = dir.join("sockbuf-export.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/sockbuf", SOCKBUF)).unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.trim().is_empty(), "systemd-analyze: {warnings}");
    // The unit grants what the DaemonSet grants.
    let bounding: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet=")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(bounding, daemonset_caps(of_kind(&manifests(), "DaemonSet")));
}

/// On a hybrid host whose cgroup v2 tree carries controllers (hugetlb here), crun refuses to
/// run a container ("cgroups in hybrid mode not supported"): those controllers are bound to
/// v1 hierarchies of their own for the test, unmounted when dropped.
struct HybridControllers(Vec<PathBuf>);

impl HybridControllers {
    fn move_to_v1() -> Self {
        let root = cgroup2_root();
        let mut moved = Vec::new();
        if root != "/sys/fs/cgroup" {
            let controllers =
                std::fs::read_to_string(Path::new(&root).join("cgroup.controllers")).unwrap();
            for c in controllers.split_whitespace() {
                let dir = Path::new("/sys/fs/cgroup").join(c);
                std::fs::create_dir_all(&dir).unwrap();
                run(Command::new("mount")
                    .args(["-t", "cgroup", "-o", c, "cgroup"])
                    .arg(&dir));
                moved.push(dir);
            }
        }
        Self(moved)
    }
}

impl Drop for HybridControllers {
    fn drop(&mut self) {
        for dir in &self.0 {
            // The containers' cgroups first, deepest first, so the hierarchy can go.
            let _ = Command::new("find")
                .arg(dir)
                .args(["-mindepth", "1", "-depth", "-type", "d", "-delete"])
                .status();
            let _ = Command::new("umount").arg(dir).status();
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// podman with the cgroupfs manager (no systemd needed here).
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--cgroup-manager=cgroupfs");
    cmd
}

/// `podman run` with open-file and process limits no higher than this process's: podman's
/// defaults need CAP_SYS_RESOURCE to be set, which this VM's root lacks.
fn podman_run() -> Command {
    let mut cmd = podman();
    cmd.arg("run");
    for (name, r) in [
        ("nofile", libc::RLIMIT_NOFILE),
        ("nproc", libc::RLIMIT_NPROC),
    ] {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(r, &mut l) }, 0);
        let n = l.rlim_cur.min(4096);
        cmd.args(["--ulimit", &format!("{name}={n}:{n}")]);
    }
    cmd
}

/// What the test made in podman: containers and images, removed when dropped.
#[derive(Default)]
struct Podman {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman().args(["rm", "-f", c]).output();
        }
        for i in &self.images {
            let _ = podman().args(["rmi", "-f", i]).output();
        }
    }
}

/// A root filesystem's skeleton, with the libraries `binaries` link (what `ldd` names) and,
/// if `with_binaries`, the binaries themselves.
fn rootfs(dir: &Path, binaries: &[&str], with_binaries: bool) {
    for sub in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for &binary in binaries {
        let out = run(Command::new("ldd").arg(binary));
        let libs = String::from_utf8(out.stdout).unwrap();
        let files = libs
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .chain(with_binaries.then_some(binary));
        for f in files {
            let to = dir.join(f.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(f, &to).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
}

/// `podman run` flags for what the DaemonSet's pod asks of its node: host namespaces,
/// capabilities, seccomp, a read-only root, the host paths it mounts (a hostPath that may be
/// created and is missing here: an empty directory of the test's).
fn daemonset_flags(ds: &Value, scratch: &Path) -> Vec<String> {
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let mut flags = vec!["--cap-drop".to_owned(), "all".to_owned()];
    for cap in daemonset_caps(ds) {
        flags.extend(["--cap-add".to_owned(), cap]);
    }
    if pod["hostPID"] == true {
        flags.extend(["--pid".to_owned(), "host".to_owned()]);
    }
    if pod["hostNetwork"] == true {
        flags.extend(["--network".to_owned(), "host".to_owned()]);
    }
    if c["securityContext"]["seccompProfile"]["type"] == "Unconfined" {
        flags.extend(["--security-opt".to_owned(), "seccomp=unconfined".to_owned()]);
    }
    if c["securityContext"]["readOnlyRootFilesystem"] == true {
        flags.push("--read-only".to_owned());
    }
    for m in c["volumeMounts"].as_array().unwrap() {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("a volume for each mount");
        let mut host = PathBuf::from(volume["hostPath"]["path"].as_str().unwrap());
        if !host.exists() && volume["hostPath"]["type"] == "DirectoryOrCreate" {
            host = scratch.join(m["name"].as_str().unwrap());
            std::fs::create_dir_all(&host).unwrap();
        }
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        flags.extend([
            "-v".to_owned(),
            format!(
                "{}:{}{ro}",
                host.display(),
                m["mountPath"].as_str().unwrap()
            ),
        ]);
    }
    flags
}

/// The capability mask of `caps` (`CAP_BPF` …), as /proc/PID/status shows it.
fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| match c.as_str() {
            "CAP_SYS_ADMIN" => 21,
            "CAP_SYS_RESOURCE" => 24,
            "CAP_SYSLOG" => 34,
            "CAP_PERFMON" => 38,
            "CAP_BPF" => 39,
            "CAP_NET_ADMIN" => 12,
            other => panic!("a capability the test does not know: {other}"),
        })
        .fold(0, |m, bit| m | 1 << bit)
}

#[test]
fn deploy_image_runs_as_the_daemonset_runs_it() {
    const TOTAL: u64 = 200_000;
    let tag = std::process::id();
    let ds = of_kind(&manifests(), "DaemonSet").clone();
    let _controllers = HybridControllers::move_to_v1();
    let mut made = Podman::default();
    let scratch = ScratchDir::new("deploy");

    // The image, from deploy/Containerfile, on a local base of the libraries sockbuf links.
    let base_dir = scratch.join("base");
    rootfs(&base_dir, &[SOCKBUF], false);
    let base = format!("localhost/sockbuf-test-base-{tag}");
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&base_dir)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    made.images.push(base.clone());
    run(podman()
        .args(["import", "-", &base])
        .stdin(tar.stdout.take().unwrap()));
    assert!(tar.wait().unwrap().success(), "tar of the base");
    let context = scratch.join("context");
    std::fs::create_dir_all(context.join("target/release")).unwrap();
    std::fs::copy(SOCKBUF, context.join("target/release/sockbuf")).unwrap();
    let image = format!("localhost/sockbuf-test-{tag}");
    made.images.push(image.clone());
    run(podman()
        .args([
            "build",
            "--build-arg",
            &format!("BASE={base}"),
            "-t",
            &image,
            "-f",
        ])
        .arg(repo().join("deploy/Containerfile"))
        .arg(&context));

    // sockbuf, run as the DaemonSet runs it, with its arguments ($(NODE_IP): loopback).
    let args: Vec<String> = strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"])
        .iter()
        .map(|a| a.replace("$(NODE_IP)", "127.0.0.1"))
        .collect();
    let listen = args
        .iter()
        .find(|a| a.starts_with("127.0.0.1:"))
        .expect("--listen $(NODE_IP):PORT")
        .clone();
    let name = format!("sockbuf-test-exporter-{tag}");
    made.containers.push(name.clone());
    run(podman_run()
        .args(["-d", "--name", &name])
        .args(daemonset_flags(&ds, &scratch))
        .arg(&image)
        .args(&args));
    let url = format!("http://{listen}/metrics");
    let answered = (0..300).any(|_| {
        thread::sleep(Duration::from_millis(100));
        metrics::get(&url).is_some()
    });
    if !answered {
        let logs = podman().args(["logs", &name]).output().unwrap();
        panic!(
            "sockbuf in its container did not answer in 30 s: {}",
            String::from_utf8_lossy(&logs.stderr)
        );
    }
    let pid = run(podman().args(["inspect", "-f", "{{.State.Pid}}", &name])).stdout;
    let pid = String::from_utf8(pid).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        eff,
        cap_mask(&daemonset_caps(&ds)),
        "sockbuf runs with exactly the DaemonSet's capabilities"
    );

    // A workload container (bash in a root of its own) writes TOTAL bytes to the test.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return n,
                k => n += k as u64,
            }
        }
    });
    let workload_root = scratch.join("workload");
    // It stays a while after writing: its container is read from /proc while it lives.
    rootfs(&workload_root, &["/bin/bash", "/bin/sleep"], true);
    let out = run(podman_run()
        .args(["-d", "--network", "host", "--rootfs"])
        .arg(&workload_root)
        .args([
            "/bin/bash",
            "-c",
            &format!(
                "exec 3<>/dev/tcp/127.0.0.1/{port}; printf '%*s' {TOTAL} '' >&3; \
                 exec 3>&-; sleep 5"
            ),
        ]));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    made.containers.push(id.clone());
    assert_eq!(reader.join().unwrap(), TOTAL);
    let labels = [
        "comm=\"bash\"".to_owned(),
        format!("container=\"{}\"", &id[..12]),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let mut text = String::new();
    let found = (0..100).any(|_| {
        thread::sleep(Duration::from_millis(100));
        text = metrics::get(&url).unwrap_or_default();
        metrics::sample(&text, "sockbuf_send_bytes_total", &labels) == Some(TOTAL as f64)
    });
    let sent: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sockbuf_send_bytes_total"))
        .collect();
    assert!(found, "no {labels:?} with {TOTAL} bytes in 10 s: {sent:#?}");
    assert!(metrics::sample_plain(&text, "sockbuf_programs_loaded").unwrap() > 0.0);
    assert_eq!(
        metrics::sample_plain(&text, "sockbuf_faults_total"),
        Some(0.0)
    );
}
