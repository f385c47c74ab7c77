//! The UDP experiment on its own thread inside the experiment's namespace: a connected
//! sender, with or without MSG_MORE, and a receiver that reads only after the last send.

use std::{io::ErrorKind, mem::MaybeUninit, net::SocketAddr, sync::mpsc};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

use crate::{netns::NetNs, sockio};

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub count: u32,
    pub size: u32,
    pub msg_more: bool,
}

/// What the experiment measured, independently of the trace.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub sender_ino: u64,
    pub receiver_ino: u64,
    pub sndbuf: u64,
    pub rcvbuf: u64,
    pub sent_bytes: u64,
    /// SIOCINQ of the receiver before it read: the size of the first waiting datagram.
    pub first_waiting: u64,
    /// Sizes of the datagrams the receiver read, in order.
    pub datagrams: Vec<u64>,
    /// Receive calls, the last one the EAGAIN that shows the queue is empty.
    pub recv_calls: u64,
}

/// Binds the receiver, reports its port on `port_tx`, waits for `go` (the tracer is
/// attached), sends, then reads everything.
pub fn run(
    plan: Plan,
    ns: &NetNs,
    port_tx: mpsc::Sender<u16>,
    go: mpsc::Receiver<()>,
) -> anyhow::Result<Measured> {
    ns.enter()?;
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let receiver = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    receiver.bind(&addr.into())?;
    let local = receiver.local_addr()?;
    port_tx.send(local.as_socket().context("receiver address")?.port())?;
    go.recv().context("the tracer did not start")?;

    let sender = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sender.connect(&local)?;
    let mut m = Measured {
        sender_ino: sockio::ino(&sender)?,
        receiver_ino: sockio::ino(&receiver)?,
        sndbuf: sender.send_buffer_size()? as u64,
        rcvbuf: receiver.recv_buffer_size()? as u64,
        ..Default::default()
    };
    let buf = vec![0x5a_u8; plan.size as usize];
    for i in 0..plan.count {
        let more = plan.msg_more && i + 1 < plan.count;
        let flags = if more { libc::MSG_MORE } else { 0 };
        let n = sender
            .send_with_flags(&buf, flags)
            .with_context(|| format!("UDP send {} of {}", i + 1, plan.count))?;
        m.sent_bytes += n as u64;
    }

    m.first_waiting = sockio::inq(&receiver)?;
    receiver.set_nonblocking(true)?;
    let mut rbuf = vec![MaybeUninit::<u8>::uninit(); 1 << 16];
    loop {
        m.recv_calls += 1;
        match receiver.recv(&mut rbuf) {
            Ok(n) => m.datagrams.push(n as u64),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(m),
            Err(e) => return Err(e).context("UDP receive"),
        }
    }
}
