//! What the kernel says of sockbuf's loaded programs and links (`BPF_OBJ_GET_INFO_BY_FD`),
//! beyond what aya exposes: the runs it skipped.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya_obj::generated::{bpf_link_info, bpf_link_type, bpf_perf_event_type, bpf_prog_info};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;

/// Fills `info` (a kernel info struct, all zeroes to start) for the object behind `fd`.
fn obj_info<T>(fd: BorrowedFd<'_>, info: &mut T) -> bool {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: std::ptr::from_mut(info) as u64,
    };
    // SAFETY: attr points at a live info struct of the size it states.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    rc == 0
}

/// `bpf_prog_info.recursion_misses` of a loaded program (0 where the kernel does not say):
/// runs skipped because the program was already running on that CPU.
pub fn recursion_misses(fd: BorrowedFd<'_>) -> u64 {
    // SAFETY: bpf_prog_info is plain integers and pointers; all zeroes is its empty value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    if obj_info(fd, &mut info) {
        info.recursion_misses
    } else {
        0
    }
}

/// Hits of the kprobes and kretprobes that run programs `prog_ids` which the kernel
/// skipped (`missed` of their perf links, Linux 6.7 on; 0 before): a kretprobe with no
/// instance left for a new call, or a probe hit while another probe's handler runs.
pub fn kprobe_misses(prog_ids: &[u32]) -> u64 {
    if prog_ids.is_empty() {
        return 0;
    }
    aya::programs::loaded_links()
        .flatten()
        .filter(|l| prog_ids.contains(&l.program_id()))
        .filter_map(|l| link_fd(l.id()))
        .map(|fd| {
            // SAFETY: bpf_link_info is plain integers and pointers; all zeroes is empty
            // (no name buffer: the kernel then fills the numbers only).
            let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
            if !obj_info(fd.as_fd(), &mut info)
                || info.type_ != bpf_link_type::BPF_LINK_TYPE_PERF_EVENT as u32
            {
                return 0;
            }
            // SAFETY: a perf-event link's info is the `perf_event` member.
            let pe = unsafe { info.__bindgen_anon_1.perf_event };
            let kprobe = [
                bpf_perf_event_type::BPF_PERF_EVENT_KPROBE as u32,
                bpf_perf_event_type::BPF_PERF_EVENT_KRETPROBE as u32,
            ];
            if kprobe.contains(&pe.type_) {
                // SAFETY: a kprobe's perf event info is the `kprobe` member.
                unsafe { pe.__bindgen_anon_1.kprobe.missed }
            } else {
                0
            }
        })
        .sum()
}

fn link_fd(id: u32) -> Option<OwnedFd> {
    #[repr(C)]
    struct IdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = IdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: the attr is the layout BPF_LINK_GET_FD_BY_ID reads; a returned fd is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_GET_FD_BY_ID,
            &raw mut attr,
            size_of::<IdAttr>(),
        )
    };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
