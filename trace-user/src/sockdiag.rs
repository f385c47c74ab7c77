//! sock_diag over netlink, as `ss` reads it: a dump of every TCP socket (IPv4 and IPv6) of
//! sockbuf's network namespace, one kernel response each. `top` reads the queues from it;
//! the summary, the counts sockets keep in their socket-local storage, which only a
//! program or this dump can read (the map's keys are sockets).

use anyhow::Context as _;
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// Calls `each` with every TCP socket's response. `extensions`: what each response carries
/// (`INET_DIAG_*` attributes asked by flag); `attrs`: request attributes appended as they
/// are (whole netlink attributes, which the crate's request has no room for).
pub fn each_tcp_socket(
    extensions: ExtensionFlags,
    attrs: &[u8],
    mut each: impl FnMut(&InetResponse),
) -> anyhow::Result<()> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).context("opening a sock_diag socket")?;
    socket.bind_auto().context("binding the sock_diag socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting the sock_diag socket")?;
    for family in [AF_INET, AF_INET6] {
        dump(&mut socket, family, extensions.clone(), attrs, &mut each)?;
    }
    Ok(())
}

/// A netlink attribute of `kind` holding `value`, padded to 4 bytes.
pub fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

fn dump(
    socket: &mut Socket,
    family: u8,
    extensions: ExtensionFlags,
    attrs: &[u8],
    each: &mut impl FnMut(&InetResponse),
) -> anyhow::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions,
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
    buf.extend_from_slice(attrs);
    // nlmsg_len, the header's first field, covers the appended attributes too.
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
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
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => each(&r),
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
