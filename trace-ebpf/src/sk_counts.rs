//! `--summary` on BTF-typed hooks: an established socket's counts kept in the socket
//! itself (socket-local storage), so that a counted call finds them with one helper call
//! that reads a cache in the `struct sock`, where the per-CPU [`crate::agg`] path hashes
//! twice (the socket's tracking entry, its counts). Made at the socket's first counted
//! call in ESTABLISHED, added to its AGG entry and deleted at its CLOSE (before the state
//! event, so userspace takes them all there); live sockets' are read by userspace with
//! sock_diag, which sees sockbuf's network namespace: sockets of others count the usual way.

use core::ptr;

use aya_ebpf::{
    btf_maps::SkStorage,
    cty::c_void,
    helpers::generated::{bpf_sk_storage_delete, bpf_sk_storage_get},
    macros::btf_map,
};
use trace_common::{
    COMM_LEN,
    agg::{KEPT_FOLDED, SkAgg, SockAgg},
    tcp_state::ESTABLISHED,
};

use crate::{agg, count::add, kernel::Sock, maps::SockTrack, model::comm};

/// The network namespace (its inode number) whose sockets keep their counts here, 0 for
/// none (`trace_common::globals::SK_COUNTING`); set by the loader.
#[unsafe(no_mangle)]
static SK_COUNTING: u32 = 0;

#[btf_map]
static SK_COUNTS: SkStorage<SkAgg> = SkStorage::new();

/// `bpf_sk_storage_get`'s flag that makes the entry (zeroed) when there is none.
const F_CREATE: u64 = 1;

/// The map, as helpers take it (the loader relocates the definition's address).
#[inline(always)]
fn map() -> *mut c_void {
    ptr::from_ref(&SK_COUNTS).cast_mut().cast()
}

#[inline(always)]
fn netns() -> u32 {
    unsafe { ptr::read_volatile(&raw const SK_COUNTING) }
}

#[inline(always)]
fn on() -> bool {
    netns() != 0
}

/// The storage of socket `sk`, a typed pointer in the verifier's eyes; `flags`: see above.
#[inline(always)]
fn storage(sk: u64, flags: u64) -> Option<&'static mut SkAgg> {
    let v = unsafe { bpf_sk_storage_get(map(), sk as *mut c_void, ptr::null_mut(), flags) }
        .cast::<SkAgg>();
    (!v.is_null()).then(|| unsafe { &mut *v })
}

/// Socket `sk`'s counts, when it keeps them (`sk`: a typed pointer, or `None` where the
/// hook is not typed), for a call `agg::counting` counts.
#[inline(always)]
pub fn kept(sk: Option<u64>) -> Option<&'static mut SkAgg> {
    let sk = sk?;
    if !on() {
        return None;
    }
    // 0 until its maker has written the socket's identity: counted the usual way till then.
    storage(sk, 0).filter(|v| unsafe { ptr::read_volatile(&raw const v.id) } != 0)
}

/// Makes socket `sk`'s counts, known as `track`, at a call of thread `pid_tgid` that the
/// caller counts into them, when kept here, it is established (a socket past its CLOSE,
/// whose calls still return, would keep them past the add at CLOSE and lose them) and in
/// the network namespace userspace reads. `None`: counted the usual way (another CPU is
/// making them, or no memory).
#[inline(always)]
pub fn make(sk: Option<u64>, track: &SockTrack, pid_tgid: u64) -> Option<&'static mut SockAgg> {
    let sk = sk?;
    if !on() {
        return None;
    }
    let sock = Sock::new(sk);
    if u32::from(sock.state().ok()?) != ESTABLISHED || sock.netns().ok()? != netns() {
        return None;
    }
    let v = storage(sk, F_CREATE)?;
    if unsafe { ptr::read_volatile(&raw const v.id) } != 0 {
        return None; // made meanwhile on another CPU: this call as above
    }
    v.agg.pid = (pid_tgid >> 32) as u32;
    v.agg.ino = track.ino;
    v.agg.comm = comm();
    v.agg.addrs = track.addrs;
    // Last, so that a reader of `id` sees the rest (x86 keeps stores in order).
    unsafe { ptr::write_volatile(&raw mut v.id, track.id) };
    Some(&mut v.agg)
}

/// Words of a [`SockAgg`], and the first that counts (after the identity).
const WORDS: usize = size_of::<SockAgg>() / 8;
const FIRST_COUNT: usize = core::mem::offset_of!(SockAgg, requested) / 8;
const _: () = assert!(core::mem::offset_of!(SockAgg, comm) + COMM_LEN <= FIRST_COUNT * 8);

/// Socket `sk` (typed, or `None`) reaches CLOSE: the counts it kept are added to its AGG
/// entry (under the id they were kept for: the socket's tracking entry may be a newer one)
/// and deleted. With no room in AGG they are lost, counted as calls the summary streamed.
#[inline(always)]
pub fn close(sk: Option<u64>) {
    let Some(sk) = sk else { return };
    if !on() {
        return;
    }
    let Some(v) = storage(sk, 0) else { return };
    if v.id != 0 {
        fold(&v.agg, v.id);
    }
    let _ = unsafe { bpf_sk_storage_delete(map(), sk as *mut c_void) };
}

#[inline(always)]
fn fold(from: &SockAgg, id: u64) {
    // No room: `entry_of` counts it.
    let Some(a) = agg::entry_of(id, from.ino, &from.addrs, 0) else {
        return;
    };
    if a.pid == 0 {
        a.pid = from.pid;
        a.comm = from.comm;
    }
    a.kept = KEPT_FOLDED;
    let src = ptr::from_ref(from).cast::<[u64; WORDS]>();
    let dst = ptr::from_mut(a).cast::<[u64; WORDS]>();
    for i in FIRST_COUNT..WORDS {
        let n = unsafe { (*src)[i] };
        if n != 0 {
            add(unsafe { &mut (*dst)[i] }, n);
        }
    }
}
