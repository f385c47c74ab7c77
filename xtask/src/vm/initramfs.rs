//! The guest's whole root file system, as one initramfs: busybox, the tools the tests run, the
//! test binaries at the absolute paths cargo built them at (the tests start `sockbuf` by a path
//! compiled in), the libraries `ldd` lists for each, every kernel's modules, and `/init`.

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::{bins::TestBins, kernels::Kernel};
use crate::cmd;

/// The guest's PID 1.
const INIT: &str = include_str!("init.sh");

/// Commands the tests and /init run, besides busybox's (`grep -rn Command::new trace-user/tests`):
/// `ip`, `ss` and `nsenter` for the fill tests, setpriv for the non-root test, bash for its
/// /dev/tcp in the cgroup test, bpftool for the faults tests.
const TOOLS: &[&str] = &[
    "busybox", "ip", "ss", "nsenter", "setpriv", "bash", "bpftool",
];

/// Where the archive is staged; the archive itself goes beside it.
pub fn build(vm_dir: &Path, bins: &TestBins, kernels: &[Kernel]) -> anyhow::Result<PathBuf> {
    let root = vm_dir.join("initramfs");
    if root.exists() {
        fs::remove_dir_all(&root).context("clearing the old initramfs tree")?;
    }
    fs::create_dir_all(&root)?;
    // Debian's merged /usr: /bin, /lib64 … are links into /usr, and ldd names libraries
    // through them; the guest gets the same links, and the files under /usr.
    for top in ["bin", "sbin", "lib", "lib64"] {
        if let Ok(target) = fs::read_link(Path::new("/").join(top)) {
            symlink(&target, root.join(top))?;
        }
    }
    for tool in TOOLS {
        let path = which::which(tool).with_context(|| format!("{tool} is not installed"))?;
        add_program(&root, &path, &host_file_in_guest(&path)?, false)?;
    }
    add_program(&root, &bins.sockbuf, &bins.sockbuf, true)?;
    symlink(&bins.sockbuf, root.join("usr/bin/sockbuf"))?;
    let mut list = String::new();
    for (name, path) in &bins.tests {
        add_program(&root, path, path, true)?;
        list.push_str(&format!("{name} {}\n", path.display()));
    }
    write(&root, "vmtest/tests", &list, 0o644)?;
    // As built: the tests look for their symbols and debug info.
    for p in &bins.programs {
        add_program(&root, p, p, false)?;
    }
    for k in kernels {
        let dir = root.join("lib/modules").join(&k.release);
        fs::create_dir_all(&dir)?;
        for m in &k.modules {
            fs::copy(m, dir.join(m.file_name().expect("a file")))?;
        }
    }
    write(&root, "init", INIT, 0o755)?;
    // setpriv's nobody, and names for ids in `ls -l` while debugging.
    write(
        &root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    )?;
    write(&root, "etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)?;
    fs::create_dir_all(root.join("root"))?;
    let archive = vm_dir.join("initramfs.cpio");
    cpio(&root, &archive)?;
    Ok(archive)
}

/// Copies `host` to `guest` inside `root` (stripped of debug info when `strip`: a smaller
/// archive boots faster), and every library `ldd` lists for it.
fn add_program(root: &Path, host: &Path, guest: &Path, strip: bool) -> anyhow::Result<()> {
    let dest = inside(root, guest);
    fs::create_dir_all(dest.parent().expect("an absolute path"))?;
    if strip {
        cmd::run(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&dest)
                .arg(host),
        )?;
    } else {
        fs::copy(host, &dest).with_context(|| format!("copying {}", host.display()))?;
    }
    for lib in libraries(host)? {
        let dest = inside(root, &host_file_in_guest(&lib)?);
        if !dest.exists() {
            fs::create_dir_all(dest.parent().expect("an absolute path"))?;
            fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
        }
    }
    Ok(())
}

/// The shared libraries `ldd` resolves for `program` (none for a static one).
fn libraries(program: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .stderr(Stdio::null())
        .output()
        .context("running ldd")?;
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libc.so.6 => /lib/…/libc.so.6 (0x…)`, `/lib64/ld-linux-x86-64.so.2 (0x…)`,
        // `linux-vdso.so.1 (0x…)` (in the kernel), or `libfoo.so => not found`.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or_default(),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if line.contains("not found") {
            bail!("ldd {}: {}", program.display(), line.trim());
        }
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Where a system file goes in the guest: its real directory (links resolved, so the merged
/// /usr links above reach it) under the name it was asked for (a library's soname link
/// becomes a file of that name).
fn host_file_in_guest(path: &Path) -> anyhow::Result<PathBuf> {
    let dir = path.parent().context("a file in a directory")?;
    let dir = fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    Ok(dir.join(path.file_name().context("a file name")?))
}

/// `root` joined with an absolute guest path.
fn inside(root: &Path, guest: &Path) -> PathBuf {
    root.join(guest.strip_prefix("/").unwrap_or(guest))
}

fn write(root: &Path, rel: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("in a directory"))?;
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A newc cpio archive of the tree at `root`, as the kernel unpacks it.
fn cpio(root: &Path, archive: &Path) -> anyhow::Result<()> {
    let out =
        fs::File::create(archive).with_context(|| format!("creating {}", archive.display()))?;
    cmd::run(
        Command::new("sh")
            .args(["-c", "find . | busybox cpio -o -H newc"])
            .current_dir(root)
            .stdout(out),
    )
}
