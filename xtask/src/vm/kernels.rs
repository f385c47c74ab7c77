//! Debian cloud kernels for the guests: the newest image of a release line (`6.1`, `6.12`,
//! `7.3`) that apt offers, downloaded once and kept under target/vm/kernels/NAME/ as the kernel
//! image and the few modules the guest loads. A second run downloads nothing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Modules the guest loads, in load order: (name, whether every kernel has it as a module,
/// whether only the kTLS tests load it). `ss -m`, which the fill tests read, asks the kernel
/// through sock_diag (tcp_diag needs inet_diag); kTLS is `tls` with AES-GCM, whose parts some
/// kernels build in (then they are not in the package, and not loaded). TLS is loaded only
/// around the kTLS tests: where it is, sockbuf attaches two more programs (one at every
/// syscall), which under emulation made other tests a third slower.
pub const MODULES: &[(&str, bool, bool)] = &[
    ("inet_diag", true, false),
    ("tcp_diag", true, false),
    ("gf128mul", false, true),
    ("ghash-generic", false, true),
    ("ctr", false, true),
    ("crypto_null", false, true),
    ("gcm", false, true),
    ("tls", true, true),
];

/// The file in a kernel's directory that lists its unpacked modules in load order, a line
/// each: the name, and `ktls` for those the guest loads only around the kTLS tests.
pub const MODULE_LIST: &str = "modules.list";

/// Suites searched when the system's own do not have a release line (bookworm has no 7.x).
/// They get a private apt state under target/vm/apt: the system's apt set-up is never changed.
const EXTRA_SUITES: &[&str] = &["trixie-backports"];
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel ready to boot.
pub struct Kernel {
    pub name: String,
    /// `uname -r` in the guest: where it looks for its modules.
    pub release: String,
    /// The Debian package and version it came from.
    pub package: String,
    pub vmlinuz: PathBuf,
    /// Uncompressed, in `MODULES` order: the list file, then the modules.
    pub modules: Vec<PathBuf>,
}

/// Where apt looks: the system's configuration, or a private one with `EXTRA_SUITES`.
enum Apt {
    System,
    Private(PathBuf),
}

impl Apt {
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        if let Self::Private(root) = self {
            let d = |p: &str| root.join(p).display().to_string();
            for (key, value) in [
                ("Dir::Etc::SourceList", d("sources.list")),
                ("Dir::Etc::SourceParts", "/dev/null".to_owned()),
                ("Dir::State::Lists", d("lists")),
                ("Dir::Cache", d("cache")),
                ("Dir::State::status", "/dev/null".to_owned()),
            ] {
                c.arg("-o").arg(format!("{key}={value}"));
            }
        }
        c
    }
}

/// Every kernel in `names`, downloading those not cached yet.
pub fn fetch(vm_dir: &Path, names: &[String]) -> anyhow::Result<Vec<Kernel>> {
    let mut private: Option<Apt> = None;
    let mut system_updated = false;
    let mut kernels = Vec::new();
    for name in names {
        if !name.chars().all(|c| c.is_ascii_digit() || c == '.') || name.is_empty() {
            bail!("--kernel {name}: give a release line such as 6.1, 6.12 or 7.3");
        }
        let dir = vm_dir.join("kernels").join(name);
        if let Some(k) = cached(name, &dir)? {
            eprintln!("xtask: kernel {name}: cached ({})", k.package);
            kernels.push(k);
            continue;
        }
        let mut found = newest_image(&Apt::System, name);
        if found.is_none() && !system_updated && newest_image(&Apt::System, "").is_none() {
            // A fresh machine may not have read its package lists yet.
            cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
            system_updated = true;
            found = newest_image(&Apt::System, name);
        }
        let apt = match found {
            Some(_) => &Apt::System,
            None => {
                if private.is_none() {
                    private = Some(private_apt(&vm_dir.join("apt"))?);
                }
                let apt = private.as_ref().expect("just set");
                found = newest_image(apt, name);
                apt
            }
        };
        let Some(image) = found else {
            bail!(
                "no linux-image-{name}.*-cloud-amd64 package in the configured suites or {}",
                EXTRA_SUITES.join(", ")
            );
        };
        kernels.push(download(apt, name, &image, &dir)?);
    }
    Ok(kernels)
}

/// The kernel in `dir`, when a previous run left it complete.
fn cached(name: &str, dir: &Path) -> anyhow::Result<Option<Kernel>> {
    let Ok(info) = fs::read_to_string(dir.join("info")) else {
        return Ok(None);
    };
    let mut lines = info.lines();
    let (Some(release), Some(package)) = (lines.next(), lines.next()) else {
        return Ok(None);
    };
    let k = Kernel {
        name: name.to_owned(),
        release: release.to_owned(),
        package: package.to_owned(),
        vmlinuz: dir.join("vmlinuz"),
        modules: match fs::read_to_string(dir.join(MODULE_LIST)) {
            // From before the list existed: downloaded again.
            Err(_) => return Ok(None),
            Ok(list) => std::iter::once(dir.join(MODULE_LIST))
                .chain(
                    list.lines()
                        .filter_map(|l| l.split_whitespace().next())
                        .map(|m| dir.join(format!("{m}.ko"))),
                )
                .collect(),
        },
    };
    let complete = k.vmlinuz.is_file() && k.modules.iter().all(|m| m.is_file());
    Ok(complete.then_some(k))
}

/// A private apt state that knows `EXTRA_SUITES`, from the mirror the system uses.
fn private_apt(root: &Path) -> anyhow::Result<Apt> {
    let mirror = system_mirror()?;
    for d in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(root.join(d)).with_context(|| format!("creating {}", root.display()))?;
    }
    let list: String = EXTRA_SUITES
        .iter()
        .map(|s| format!("deb [signed-by={KEYRING}] {mirror} {s} main\n"))
        .collect();
    fs::write(root.join("sources.list"), list).context("writing the private sources.list")?;
    let apt = Apt::Private(root.to_owned());
    eprintln!(
        "xtask: reading the package lists of {}",
        EXTRA_SUITES.join(", ")
    );
    cmd::run(apt.command("apt-get").args(["update", "-qq"]))?;
    Ok(apt)
}

/// The Debian mirror the system's main suite comes from, as `apt-cache policy` lists it
/// (` 500 URI SUITE/main amd64 Packages`).
fn system_mirror() -> anyhow::Result<String> {
    let policy = cmd::output(Command::new("apt-cache").arg("policy"));
    policy
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0].parse::<i32>().is_ok() && f[2].ends_with("/main"))
                .then(|| (f[1], f[2]))
        })
        .find(|(_, suite)| !suite.contains("-security") && !suite.contains("-updates"))
        .map(|(uri, _)| uri.trim_end_matches('/').to_owned())
        .context("no Debian main suite in `apt-cache policy` to take the mirror from")
}

/// The newest `linux-image-NAME…-cloud-amd64` that `apt` offers (any, for an empty NAME).
fn newest_image(apt: &Apt, name: &str) -> Option<String> {
    let line = if name.is_empty() {
        String::new()
    } else {
        format!("{}[.-]", name.replace('.', "\\."))
    };
    let pattern = format!("^linux-image-{line}[0-9].*-cloud-amd64$");
    let found = cmd::output(
        apt.command("apt-cache")
            .args(["search", "--names-only"])
            .arg(pattern),
    );
    found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|pkg| version_key(pkg))
        .map(str::to_owned)
}

/// `linux-image-6.12.117+deb12-cloud-amd64` → [6, 12, 117, 12]: numbers compare as numbers.
fn version_key(pkg: &str) -> Vec<u64> {
    pkg.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Downloads `image` (and on 7.x, the packages its kernel image and modules moved to),
/// unpacks what the guest needs into `dir`, and removes the rest.
fn download(apt: &Apt, name: &str, image: &str, dir: &Path) -> anyhow::Result<Kernel> {
    let show = cmd::output(
        apt.command("apt-cache")
            .args(["show", "--no-all-versions"])
            .arg(image),
    );
    let field = |f: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(f))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let version = field("Version:");
    let mut packages = vec![image.to_owned()];
    packages.extend(
        field("Depends:")
            .split(',')
            .filter_map(|d| d.split_whitespace().next())
            .filter(|d| d.starts_with("linux-binary-") || d.starts_with("linux-modules-"))
            .map(str::to_owned),
    );
    eprintln!("xtask: kernel {name}: downloading {}", packages.join(" "));
    let debs = dir.join("debs");
    let root = dir.join("root");
    for d in [&debs, &root] {
        let _ = fs::remove_dir_all(d);
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // Run as root: apt's _apt user may not write into the project's tree.
    cmd::run(
        apt.command("apt-get")
            .args(["-o", "APT::Sandbox::User=root", "download"])
            .args(&packages)
            .current_dir(&debs),
    )?;
    for deb in fs::read_dir(&debs)? {
        cmd::run(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(deb?.path())
                .arg(&root),
        )?;
    }
    let (release, vmlinuz) = find_vmlinuz(&root)?;
    fs::copy(&vmlinuz, dir.join("vmlinuz")).context("copying the kernel image")?;
    let mut list = String::new();
    for &(m, required, ktls) in MODULES {
        if unpack_module(&root, &release, m, &dir.join(format!("{m}.ko")))? {
            list.push_str(&format!("{m}{}\n", if ktls { " ktls" } else { "" }));
        } else if required {
            bail!("module {m} of {release} is not in the downloaded packages");
        }
    }
    fs::write(dir.join(MODULE_LIST), list)?;
    fs::write(dir.join("info"), format!("{release}\n{image} {version}\n"))?;
    fs::remove_dir_all(&debs)?;
    fs::remove_dir_all(&root)?;
    cached(name, dir)?.context("the unpacked kernel is incomplete")
}

/// `boot/vmlinuz-RELEASE` (up to 6.x) or `usr/lib/modules/RELEASE/vmlinuz` (7.x).
fn find_vmlinuz(root: &Path) -> anyhow::Result<(String, PathBuf)> {
    if let Ok(entries) = fs::read_dir(root.join("boot")) {
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(release) = file.strip_prefix("vmlinuz-") {
                return Ok((release.to_owned(), e.path()));
            }
        }
    }
    if let Ok(entries) = fs::read_dir(root.join("usr/lib/modules")) {
        for e in entries.flatten() {
            if e.path().join("vmlinuz").is_file() {
                let release = e.file_name().to_string_lossy().into_owned();
                return Ok((release, e.path().join("vmlinuz")));
            }
        }
    }
    bail!("no vmlinuz in the downloaded packages ({})", root.display())
}

/// Finds module `m` of `release`, plain or compressed, and writes it uncompressed to `out`
/// (busybox's insmod takes plain modules only); false when the packages do not have it.
fn unpack_module(root: &Path, release: &str, m: &str, out: &Path) -> anyhow::Result<bool> {
    for base in ["lib/modules", "usr/lib/modules"] {
        let Some(dir) = module_dir(&root.join(base).join(release).join("kernel"), m) else {
            continue;
        };
        let stem = dir.join(m);
        for (ext, tool) in [
            ("ko", None),
            ("ko.xz", Some("xz")),
            ("ko.zst", Some("zstd")),
        ] {
            let path = stem.with_extension(ext);
            if !path.is_file() {
                continue;
            }
            match tool {
                None => fs::copy(&path, out).map(drop).context("copying a module")?,
                Some(tool) => {
                    let data = Command::new(tool)
                        .arg("-dc")
                        .arg(&path)
                        .output()
                        .with_context(|| format!("running {tool}"))?;
                    if !data.status.success() {
                        bail!("{tool} -dc {} failed", path.display());
                    }
                    fs::write(out, data.stdout).context("writing a module")?;
                }
            }
            return Ok(true);
        }
    }
    Ok(false)
}

/// The directory under `tree` that holds module `m` (`m.ko`, `m.ko.xz`, …).
fn module_dir(tree: &Path, m: &str) -> Option<PathBuf> {
    for e in fs::read_dir(tree).ok()?.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if let Some(found) = module_dir(&path, m) {
                return Some(found);
            }
        } else if name.split_once(".ko").is_some_and(|(stem, _)| stem == m) {
            return Some(tree.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn newest_by_numbers() {
        let key = super::version_key;
        assert!(key("linux-image-6.1.0-56-cloud-amd64") > key("linux-image-6.1.0-9-cloud-amd64"));
        assert!(
            key("linux-image-6.12.117+deb12-cloud-amd64")
                > key("linux-image-6.12.99+deb12-cloud-amd64")
        );
    }
}
