//! Kernel struct field offsets from the running kernel's BTF.
//!
//! aya's Rust eBPF programs get no CO-RE relocations, so sockbuf finds each field it reads in
//! `/sys/kernel/btf/vmlinux` at start-up and hands the offsets to the programs as a read-only
//! global. One binary then works on any kernel whose BTF has these fields.

use std::path::Path;

use btf_rs::{Btf, Type};
use trace_common::KernelOffsets;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("no kernel BTF at {0}: sockbuf needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    Missing(String),
    #[error("cannot parse kernel BTF at {path}: {source}")]
    Parse { path: String, source: btf_rs::Error },
    #[error("this kernel's BTF has no struct {0}: sockbuf cannot trace on this kernel")]
    NoStruct(&'static str),
    #[error("this kernel's struct {0} has no field {1}: sockbuf cannot trace on this kernel")]
    NoField(&'static str, &'static str),
    #[error("struct {0} field {1} is {2} bytes on this kernel, sockbuf expects {3}")]
    FieldSize(&'static str, &'static str, usize, usize),
}

/// Parsed kernel BTF, with look-ups of dotted member paths.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn from_sys() -> Result<Self, BtfError> {
        Self::from_path(Path::new(VMLINUX_BTF))
    }

    pub fn from_path(path: &Path) -> Result<Self, BtfError> {
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(BtfError::Missing(shown));
        }
        let btf = Btf::from_file(path).map_err(|source| BtfError::Parse {
            path: shown,
            source,
        })?;
        Ok(Self { btf })
    }

    fn find_struct(&self, name: &'static str) -> Result<btf_rs::Struct, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoStruct(name))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) => Some(s),
                _ => None,
            })
            .ok_or(BtfError::NoStruct(name))
    }

    /// Skips typedefs and qualifiers down to the type that has a layout.
    fn strip(&self, mut t: Type) -> Option<Type> {
        loop {
            t = match &t {
                Type::Typedef(x) => self.btf.resolve_chained_type(x).ok()?,
                Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => {
                    self.btf.resolve_chained_type(x).ok()?
                }
                Type::TypeTag(x) => self.btf.resolve_chained_type(x).ok()?,
                _ => return Some(t),
            }
        }
    }

    fn size_of(&self, t: &Type) -> Option<usize> {
        match t {
            Type::Int(i) => Some(i.size()),
            Type::Ptr(_) => Some(8),
            Type::Struct(s) | Type::Union(s) => Some(s.size()),
            Type::Enum(e) => Some(e.size()),
            Type::Enum64(e) => Some(e.size()),
            Type::Array(a) => {
                let elem = self.strip(self.btf.resolve_chained_type(a).ok()?)?;
                Some(a.len() * self.size_of(&elem)?)
            }
            _ => None,
        }
    }

    /// Byte offset and type of member `name` of `s`, looking inside anonymous structs and
    /// unions the way C does.
    fn member(&self, s: &btf_rs::Struct, name: &str) -> Option<(usize, Type)> {
        for m in &s.members {
            if m.bitfield_size().is_some_and(|b| b != 0) {
                continue; // sockbuf reads whole bytes only
            }
            let here = (m.bit_offset() / 8) as usize;
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            let mtype = self.strip(self.btf.resolve_chained_type(m).ok()?)?;
            if mname == name {
                return Some((here, mtype));
            }
            if mname.is_empty()
                && let Type::Struct(inner) | Type::Union(inner) = &mtype
                && let Some((off, t)) = self.member(inner, name)
            {
                return Some((here + off, t));
            }
        }
        None
    }

    /// Offset of `path` (dotted, e.g. `__sk_common.skc_dport`) in struct `name`, checked to be
    /// `size` bytes wide.
    pub fn offset(
        &self,
        name: &'static str,
        path: &'static str,
        size: usize,
    ) -> Result<u32, BtfError> {
        self.offset_any_size(name, path, &[size])
    }

    /// Like [`offset`](Self::offset), for a field whose width differs between kernels.
    pub fn offset_any_size(
        &self,
        name: &'static str,
        path: &'static str,
        sizes: &[usize],
    ) -> Result<u32, BtfError> {
        let mut cur = Type::Struct(self.find_struct(name)?);
        let mut off = 0;
        for part in path.split('.') {
            let (Type::Struct(s) | Type::Union(s)) = &cur else {
                return Err(BtfError::NoField(name, path));
            };
            let (o, t) = self.member(s, part).ok_or(BtfError::NoField(name, path))?;
            off += o;
            cur = t;
        }
        let actual = self.size_of(&cur).ok_or(BtfError::NoField(name, path))?;
        if !sizes.contains(&actual) {
            return Err(BtfError::FieldSize(name, path, actual, sizes[0]));
        }
        Ok(off as u32)
    }

    /// Every offset the programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            sk_family: self.offset("sock", "__sk_common.skc_family", 2)?,
            sk_num: self.offset("sock", "__sk_common.skc_num", 2)?,
            sk_dport: self.offset("sock", "__sk_common.skc_dport", 2)?,
            sk_rcv_saddr: self.offset("sock", "__sk_common.skc_rcv_saddr", 4)?,
            sk_daddr: self.offset("sock", "__sk_common.skc_daddr", 4)?,
            sk_v6_rcv_saddr: self.offset("sock", "__sk_common.skc_v6_rcv_saddr", 16)?,
            sk_v6_daddr: self.offset("sock", "__sk_common.skc_v6_daddr", 16)?,
            sk_protocol: self.offset("sock", "sk_protocol", 2)?,
            sk_type: self.offset("sock", "sk_type", 2)?,
            sk_sndbuf: self.offset("sock", "sk_sndbuf", 4)?,
            sk_wmem_queued: self.offset("sock", "sk_wmem_queued", 4)?,
            sk_socket: self.offset("sock", "sk_socket", 8)?,
            tp_write_seq: self.offset("tcp_sock", "write_seq", 4)?,
            tp_snd_una: self.offset("tcp_sock", "snd_una", 4)?,
            tp_snd_nxt: self.offset("tcp_sock", "snd_nxt", 4)?,
            tp_bytes_acked: self.offset("tcp_sock", "bytes_acked", 8)?,
            socket_alloc_inode: self.offset(
                "socket_alloc",
                "vfs_inode",
                self.struct_size("inode")?,
            )?,
            inode_ino: self.offset("inode", "i_ino", 8)?,
            msg_iter_count: self.offset("msghdr", "msg_iter.count", 8)?,
            msg_flags: self.offset("msghdr", "msg_flags", 4)?,
            skb_cb: self.offset("sk_buff", "cb", 48)?,
            tcb_ack_seq: self.offset("tcp_skb_cb", "ack_seq", 4)?,
            tcb_tcp_flags: self.offset_any_size("tcp_skb_cb", "tcp_flags", &[1, 2])?,
            tcb_end_seq: self.offset("tcp_skb_cb", "end_seq", 4)?,
            sk_state: self.offset("sock", "__sk_common.skc_state", 1)?,
            // Moved into sock_common in 6.x (`#define sk_flags __sk_common.skc_flags`).
            sk_flags: self
                .offset("sock", "__sk_common.skc_flags", 8)
                .or_else(|_| self.offset("sock", "sk_flags", 8))?,
            sk_rcvbuf: self.offset("sock", "sk_rcvbuf", 4)?,
            sk_rmem_alloc: self.offset("sock", "sk_backlog.rmem_alloc", 4)?,
            sk_wmem_alloc: self.offset("sock", "sk_wmem_alloc", 4)?,
            tp_rcv_nxt: self.offset("tcp_sock", "rcv_nxt", 4)?,
            tp_copied_seq: self.offset("tcp_sock", "copied_seq", 4)?,
            tp_bytes_received: self.offset("tcp_sock", "bytes_received", 8)?,
            up_pending: self.offset("udp_sock", "pending", 4)?,
            // __u16 on recent kernels, int on older ones: the low half is read either way.
            up_len: self.offset_any_size("udp_sock", "len", &[2, 4])?,
            skb_sk: self.offset("sk_buff", "sk", 8)?,
            skb_head: self.offset("sk_buff", "head", 8)?,
            skb_transport_header: self.offset("sk_buff", "transport_header", 2)?,
            inet_sport: self.offset("inet_sock", "inet_sport", 2)?,
            task_files: self.offset("task_struct", "files", 8)?,
            task_pid: self.offset("task_struct", "pid", 4)?,
            task_tgid: self.offset("task_struct", "tgid", 4)?,
            task_comm: self.offset("task_struct", "comm", 16)?,
            files_fdt: self.offset("files_struct", "fdt", 8)?,
            fdt_max_fds: self.offset("fdtable", "max_fds", 4)?,
            fdt_fd: self.offset("fdtable", "fd", 8)?,
            file_private_data: self.offset("file", "private_data", 8)?,
            file_inode: self.offset("file", "f_inode", 8)?,
            file_flags: self.offset("file", "f_flags", 4)?,
            inode_mode: self.offset("inode", "i_mode", 2)?,
            socket_sk: self.offset("socket", "sk", 8)?,
            task_stack: self.offset("task_struct", "stack", 8)?,
            task_flags: self.offset("task_struct", "flags", 4)?,
            sk_prot: self.offset("sock", "__sk_common.skc_prot", 8)?,
            proto_sendmsg: self.offset("proto", "sendmsg", 8)?,
            socket_file: self.offset("socket", "file", 8)?,
            // Only `--summary`'s counts kept in sockets need these: 0 turns that off.
            sk_net: self.offset("sock", "__sk_common.skc_net", 8).unwrap_or(0),
            net_inum: self.offset("net", "ns.inum", 4).unwrap_or(0),
        })
    }

    /// The members of `enum name` with `prefix` removed, by value (empty when the kernel
    /// has no such enum).
    pub fn enum_names(&self, name: &str, prefix: &str) -> Vec<(u32, String)> {
        let Ok(types) = self.btf.resolve_types_by_name(name) else {
            return Vec::new();
        };
        let Some(e) = types.into_iter().find_map(|t| match t {
            Type::Enum(e) => Some(e),
            _ => None,
        }) else {
            return Vec::new();
        };
        e.members
            .iter()
            .filter_map(|m| {
                let n = self.btf.resolve_name(m).ok()?;
                Some((m.val(), n.trim_start_matches(prefix).to_owned()))
            })
            .collect()
    }

    fn struct_size(&self, name: &'static str) -> Result<usize, BtfError> {
        Ok(self.find_struct(name)?.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the machine's own BTF: every field sockbuf needs must resolve, at distinct offsets.
    #[test]
    fn resolves_running_kernel_offsets() {
        let btf = KernelBtf::from_sys().expect("kernel BTF");
        let off = btf.kernel_offsets().expect("offsets");
        assert_ne!(off.tp_snd_una, off.tp_snd_nxt);
        assert_eq!(
            off.sk_family, 16,
            "skc_family sits after the addr/hash/port unions"
        );
        assert!(
            off.tp_write_seq > off.sk_socket,
            "tcp_sock fields follow struct sock"
        );
    }

    #[test]
    fn missing_field_names_it() {
        let btf = KernelBtf::from_sys().expect("kernel BTF");
        let err = btf.offset("sock", "no_such_field", 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this kernel's struct sock has no field no_such_field: sockbuf cannot trace on this kernel"
        );
    }

    #[test]
    fn missing_btf_says_what_to_do() {
        let err = KernelBtf::from_path(Path::new("/nonexistent/vmlinux"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
