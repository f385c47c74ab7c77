//! Turns the filter options into the programs' `Filter` global, checking each first.

use std::{os::unix::fs::MetadataExt, path::Path};

use trace_common::{COMM_LEN, Filter};

use crate::{cli::FilterArgs, error::SetupError};

/// `statfs` magic of cgroup v2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

pub fn build(args: &FilterArgs) -> Result<Filter, SetupError> {
    let mut f = Filter::default();
    if let Some(pid) = args.pid {
        if pid == 0 || !Path::new("/proc").join(pid.to_string()).exists() {
            return Err(SetupError::NoSuchPid(pid));
        }
        f.pid = pid;
    }
    if let Some(comm) = &args.comm {
        if comm.len() >= COMM_LEN {
            return Err(SetupError::CommTooLong(comm.clone()));
        }
        f.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    }
    f.port = args.port.unwrap_or(0);
    if let Some(path) = &args.cgroup {
        f.cgroup = cgroup_id(path)?;
    }
    Ok(f)
}

/// A cgroup v2 directory's id: its inode number, which `bpf_get_current_cgroup_id` returns.
fn cgroup_id(path: &Path) -> Result<u64, SetupError> {
    let bad = |why: String| SetupError::BadCgroup {
        path: path.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".to_owned()));
    }
    let st = nix::sys::statfs::statfs(path).map_err(|e| bad(e.to_string()))?;
    if st.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
        return Err(bad("not on a cgroup v2 filesystem".to_owned()));
    }
    Ok(meta.ino())
}
