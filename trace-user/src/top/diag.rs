//! The socket table as `ss -tmi` reads it: sock_diag over netlink, every TCP socket of
//! sockbuf's network namespace with its queues, buffers and unsent bytes, by inode. `top`
//! reads it at each refresh: what the queues hold *now*, where the programs saw them at each
//! call.

use std::collections::HashMap;

use anyhow::Context as _;
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

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
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).context("opening a sock_diag socket")?;
    socket.bind_auto().context("binding the sock_diag socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting the sock_diag socket")?;
    let mut out = HashMap::new();
    for family in [AF_INET, AF_INET6] {
        dump(&mut socket, family, &mut out)?;
    }
    Ok(out)
}

fn dump(socket: &mut Socket, family: u8, out: &mut HashMap<u64, Diag>) -> anyhow::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO | ExtensionFlags::SKMEMINFO,
            states: StateFlags::all(),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).context("asking sock_diag")?;
    let mut rx = vec![0u8; 1 << 16];
    loop {
        let n = socket
            .recv(&mut &mut rx[..], 0)
            .context("reading sock_diag")?;
        // A datagram holds whole messages; the dump ends with NLMSG_DONE.
        let mut off = 0;
        while off < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[off..n])
                .context("a sock_diag message that does not parse")?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r))
                    if r.header.inode != 0 =>
                {
                    out.insert(u64::from(r.header.inode), diag(&r));
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => anyhow::bail!("sock_diag: {e:?}"),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
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
