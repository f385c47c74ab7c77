//! The socket table as `ss -tmi` reads it: sock_diag over netlink, every TCP socket of
//! sockbuf's network namespace with its queues, buffers and unsent bytes, by inode. `top`
//! reads it at each refresh: what the queues hold *now*, where the programs saw them at each
//! call.

use std::collections::HashMap;

use netlink_packet_sock_diag::inet::{ExtensionFlags, nlas::Nla};

/// One socket's row of the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diag {
    /// `address:port` each end, as the summary writes them.
    pub laddr: String,
    pub raddr: String,
    pub lport: u16,
    pub rport: u16,
    /// The kernel's TCP state number (`format::tcp_state` names it).
    pub state: u8,
    /// `write_seq - snd_una`: bytes not yet acked (ss's Send-Q, SIOCOUTQ).
    pub send_q: u32,
    /// `rcv_nxt - copied_seq`: bytes received, not yet read (ss's Recv-Q, SIOCINQ).
    pub recv_q: u32,
    /// Of `send_q`, bytes not yet sent (`tcpi_notsent_bytes`).
    pub unsent: u32,
    pub sndbuf: u32,
    pub wmem_queued: u32,
    pub rcvbuf: u32,
}

impl Diag {
    /// Bytes sent and not yet acked.
    pub fn in_flight(&self) -> u32 {
        self.send_q.saturating_sub(self.unsent)
    }
}

/// `tcpi_notsent_bytes`'s offset in `struct tcp_info` (uapi/linux/tcp.h: 8 bytes of u8
/// fields, 24 u32, 4 u64, 2 u32): the crate's typed parse wants the newest kernel's whole
/// struct and refuses an older kernel's shorter one.
const TCPI_NOTSENT_BYTES: usize = 144;

/// Every TCP socket (IPv4 and IPv6) with an inode, by inode.
pub fn read_all() -> anyhow::Result<HashMap<u64, Diag>> {
    let mut out = HashMap::new();
    crate::sockdiag::each_tcp_socket(ExtensionFlags::INFO | ExtensionFlags::SKMEMINFO, &[], |r| {
        if r.header.inode != 0 {
            out.insert(u64::from(r.header.inode), diag(r));
        }
    })?;
    Ok(out)
}

fn diag(r: &netlink_packet_sock_diag::inet::InetResponse) -> Diag {
    let id = &r.header.socket_id;
    let mut d = Diag {
        laddr: format!("{}:{}", id.source_address, id.source_port),
        raddr: format!("{}:{}", id.destination_address, id.destination_port),
        lport: id.source_port,
        rport: id.destination_port,
        state: r.header.state,
        send_q: r.header.send_queue,
        recv_q: r.header.recv_queue,
        ..Diag::default()
    };
    for nla in &r.nlas {
        match nla {
            Nla::MemInfo(m) => {
                // SK_MEMINFO_* order: RMEM_ALLOC, RCVBUF, WMEM_ALLOC, SNDBUF, FWD_ALLOC,
                // WMEM_QUEUED (the crate's names for them differ).
                d.rcvbuf = m.receive_queue_max;
                d.sndbuf = m.send_queue_max;
                d.wmem_queued = m.send_queue;
            }
            Nla::TcpInfo(info) => {
                if let Some(b) = info.get(TCPI_NOTSENT_BYTES..TCPI_NOTSENT_BYTES + 4) {
                    d.unsent = u32::from_ne_bytes(b.try_into().expect("four bytes"));
                }
            }
            _ => {}
        }
    }
    d
}
