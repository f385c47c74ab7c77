//! The counts established sockets keep in their socket-local storage (trace-ebpf's
//! `sk_counts`), read as `ss --bpf-maps` reads such storage: sock_diag's dump, asked for
//! the map's value with each socket (`INET_DIAG_REQ_SK_BPF_STORAGES`). The kernel lists a
//! storage map's entries to no other reader here (its keys are sockets, and a BPF
//! iterator, the other way, is refused where fentry is). The programs keep counts only in
//! sockets of sockbuf's network namespace, the one this dump sees.

use std::os::fd::{AsFd, AsRawFd};

use anyhow::Context as _;
use aya::{Ebpf, maps::Map};
use netlink_packet_core::{Nla as _, NlasIterator};
use netlink_packet_sock_diag::inet::{ExtensionFlags, nlas::Nla};
use trace_common::{agg::SkAgg, maps};

use crate::sockdiag::{attr, each_tcp_socket};

/// `INET_DIAG_REQ_SK_BPF_STORAGES`, holding `SK_DIAG_BPF_STORAGE_REQ_MAP_FD`s.
const REQ_SK_BPF_STORAGES: u16 = 2;
const REQ_MAP_FD: u16 = 1;
/// `INET_DIAG_SK_BPF_STORAGES`, holding an `SK_DIAG_BPF_STORAGE` per map, which holds
/// `SK_DIAG_BPF_STORAGE_MAP_ID` and `SK_DIAG_BPF_STORAGE_MAP_VALUE`.
const SK_BPF_STORAGES: u16 = 20;
const STORAGE: u16 = 1;
const MAP_VALUE: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
/// An attribute's kind without its flags (`NLA_TYPE_MASK`).
const KIND: u16 = !(NLA_F_NESTED | 1 << 14);

/// The request attribute that names the map (its fd, open in sockbuf for the dump).
pub struct SkCounts {
    request: Vec<u8>,
    /// Keeps the map's fd that `request` names open.
    _map: aya::maps::MapData,
}

impl SkCounts {
    /// Takes the map out of the programs' object.
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let Some(Map::SkStorage(map)) = ebpf.take_map(maps::SK_COUNTS) else {
            anyhow::bail!("{} map missing", maps::SK_COUNTS);
        };
        let fd = map.fd().as_fd().as_raw_fd() as u32;
        let request = attr(
            REQ_SK_BPF_STORAGES | NLA_F_NESTED,
            &attr(REQ_MAP_FD, &fd.to_ne_bytes()),
        );
        let counts = Self { request, _map: map };
        // Once now: a kernel without sock_diag's storage dump would otherwise fail the
        // summary only at its end.
        counts.read().context(
            "the kernel's sock_diag cannot list the sockets' counts (INET_DIAG); \
             --full counts without it",
        )?;
        Ok(counts)
    }

    /// Every live socket's counts: one dump of the socket table.
    pub fn read(&self) -> anyhow::Result<Vec<SkAgg>> {
        let mut out = Vec::new();
        each_tcp_socket(ExtensionFlags::empty(), &self.request, |r| {
            for nla in &r.nlas {
                if let Nla::Other(o) = nla
                    && o.kind() & KIND == SK_BPF_STORAGES
                {
                    let mut value = vec![0; o.value_len()];
                    o.emit_value(&mut value);
                    out.extend(values(&value));
                }
            }
        })
        .context("reading the sockets' counts (sock_diag)")?;
        Ok(out)
    }
}

/// The map values in an `INET_DIAG_SK_BPF_STORAGES` attribute's value (one map: one).
fn values(storages: &[u8]) -> impl Iterator<Item = SkAgg> + '_ {
    NlasIterator::new(storages)
        .filter_map(Result::ok)
        .filter(|s| s.kind() & KIND == STORAGE)
        .flat_map(|s| {
            NlasIterator::new(s.value())
                .filter_map(Result::ok)
                .filter(|a| a.kind() & KIND == MAP_VALUE && a.value().len() >= size_of::<SkAgg>())
                // SAFETY: SkAgg is plain integers; the kernel copied the map value whole.
                .map(|a| unsafe { std::ptr::read_unaligned(a.value().as_ptr().cast::<SkAgg>()) })
                .collect::<Vec<_>>()
        })
}
