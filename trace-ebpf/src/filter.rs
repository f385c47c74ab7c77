//! In-kernel filters, set by the loader as a read-only global before load.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm},
};
use trace_common::{COMM_LEN, Filter};

use crate::kernel::{Fault, Sock};

#[unsafe(no_mangle)]
static FILTER: Global<Filter> = Global::new(Filter {
    pid: 0,
    port: 0,
    _pad: 0,
    cgroup: 0,
    comm: [0; COMM_LEN],
});

/// Task-level filters: cheap, evaluated before any kernel memory is read.
#[inline(always)]
pub fn task_passes(pid: u32) -> bool {
    let f = FILTER.load();
    if f.pid != 0 && f.pid != pid {
        return false;
    }
    if f.cgroup != 0 && f.cgroup != unsafe { bpf_get_current_cgroup_id() } {
        return false;
    }
    if f.comm[0] != 0 {
        match bpf_get_current_comm() {
            Ok(comm) if comm == f.comm => {}
            _ => return false,
        }
    }
    true
}

/// Socket-level filter: local or remote port.
#[inline(always)]
pub fn sock_passes(sk: &Sock) -> Result<bool, Fault> {
    let port = FILTER.load().port;
    Ok(port == 0 || sk.lport()? == port || sk.rport()? == port)
}

/// No task-level filter is set: events that arrive in softirq context, where the current
/// task is whichever one was interrupted, may start tracking a socket only then.
#[inline(always)]
pub fn no_task_filter() -> bool {
    let f = FILTER.load();
    f.pid == 0 && f.cgroup == 0 && f.comm[0] == 0
}
