//! sockbuf on a system without tracefs or bpffs mounted: in a mount namespace of the test's
//! own (nothing of the host's changes), both unmounted, `trace` still runs; it mounts
//! tracefs, says so at `-v`, and unmounts it again when it exits.

mod common;

use std::process::Command;

use common::*;

#[test]
fn trace_mounts_tracefs_for_its_run_and_leaves_it_as_it_found_it() {
    let script = format!(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/fs/bpf 2>/dev/null; \
         [ -e /sys/kernel/tracing/events ] && echo STILL-MOUNTED; \
         {SOCKBUF} -v trace --json -d 1s -p 1 >/dev/null; echo EXIT=$?; \
         [ -e /sys/kernel/tracing/events ] && echo LEFT-MOUNTED || echo UNMOUNTED-AGAIN"
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stdout.contains("STILL-MOUNTED"),
        "the test could not unmount tracefs"
    );
    assert!(
        stdout.contains("EXIT=0"),
        "sockbuf failed: {stdout}{stderr}"
    );
    assert!(
        stderr.contains("mounted tracefs at /sys/kernel/tracing"),
        "says it mounted tracefs: {stderr}"
    );
    assert!(stdout.contains("UNMOUNTED-AGAIN"), "{stdout}{stderr}");
}
