//! JSON objects of receive calls, connection lifecycle (state, RST, FIN) and UDP events.

use std::net::IpAddr;

use serde::Serialize;
use trace_common::{
    EventKind, Header, RECV_F_UNSEEN, RecvEvent, RecvQueue, SendQueue, SockAddrs, SockEvent,
    UdpEvent, tcp_state,
};

use super::json::{is_not_err, ser_err, ser_flags};
use crate::format;

/// Who made an event and on which socket: the fields every event with a socket carries.
#[derive(Serialize)]
pub struct Who<'a> {
    cpu: u32,
    pid: u32,
    tid: u32,
    comm: &'a str,
    sock_id: u64,
    /// The inode (`ss -e`'s `ino`), 0 while unknown; differs from `sock_id` only for an
    /// accepted socket met before `accept()`.
    ino: u64,
}

impl<'a> Who<'a> {
    pub fn new(hdr: &Header, comm: &'a [u8; 16]) -> Self {
        Self {
            cpu: hdr.cpu,
            pid: hdr.pid,
            tid: hdr.tid,
            comm: format::comm_str(comm),
            sock_id: hdr.sock_id,
            ino: hdr.ino,
        }
    }
}

/// Fields every event that carries the socket's addresses has.
#[derive(Serialize)]
pub struct Common<'a> {
    kind: &'static str,
    ts_ns: u64,
    #[serde(flatten)]
    who: Who<'a>,
    family: &'static str,
    saddr: IpAddr,
    lport: u16,
    daddr: IpAddr,
    rport: u16,
}

impl<'a> Common<'a> {
    pub fn new(kind: &'static str, hdr: &Header, comm: &'a [u8; 16], a: &SockAddrs) -> Self {
        Self {
            kind,
            ts_ns: hdr.ts_ns,
            who: Who::new(hdr, comm),
            family: format::family_name(a),
            saddr: format::local_ip(a),
            lport: a.lport,
            daddr: format::remote_ip(a),
            rport: a.rport,
        }
    }
}

/// What a send or receive call did: bytes copied, its raw return and errno name, its flags.
#[derive(Serialize)]
pub struct Outcome {
    copied: u64,
    #[serde(serialize_with = "ser_err", skip_serializing_if = "is_not_err")]
    error: i64,
    ret: i64,
    #[serde(serialize_with = "ser_flags")]
    msg_flags: u32,
}

impl Outcome {
    pub fn new(ret: i64, msg_flags: u32) -> Self {
        Self {
            copied: ret.max(0) as u64,
            error: ret,
            ret,
            msg_flags,
        }
    }
}

#[derive(Serialize)]
pub struct RecvJson<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    protocol: &'static str,
    #[serde(flatten)]
    outcome: Outcome,
    rcvbuf: u32,
    rmem_alloc: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    recv_q: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    received: Option<u64>,
    #[serde(flatten)]
    call: super::json::CallRefJson,
    /// An error its application call did not return (see `RECV_F_UNSEEN`).
    unseen_error: bool,
}

pub fn recv(e: &RecvEvent) -> RecvJson<'_> {
    let tcp = e.protocol == 6;
    RecvJson {
        common: Common::new("recv", &e.hdr, &e.comm, &e.addrs),
        protocol: format::protocol_name(e.protocol),
        outcome: Outcome::new(e.ret, e.msg_flags),
        rcvbuf: e.queue.rcvbuf,
        rmem_alloc: e.queue.rmem_alloc,
        recv_q: tcp.then_some(e.queue.recv_q),
        received: tcp.then_some(e.queue.received),
        call: (&e.call).into(),
        unseen_error: e.flags & RECV_F_UNSEEN != 0,
    }
}

#[derive(Serialize)]
pub struct SockJson<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_state: Option<&'static str>,
    /// The state after the change (`state`), or the socket's state (RST and FIN events).
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(flatten)]
    send: SendQueue,
    #[serde(flatten)]
    recv: RecvQueue,
}

pub fn sock(e: &SockEvent) -> SockJson<'_> {
    let kind = EventKind::from_u32(e.hdr.kind);
    let name = match kind {
        Some(EventKind::State) => "state",
        Some(EventKind::RstOut) => "rst_out",
        Some(EventKind::RstIn) => "rst_in",
        Some(EventKind::FinOut) => "fin_out",
        _ => "fin_in",
    };
    let fin = matches!(kind, Some(EventKind::FinOut | EventKind::FinIn));
    SockJson {
        common: Common::new(name, &e.hdr, &e.comm, &e.addrs),
        old_state: (kind == Some(EventKind::State)).then(|| tcp_state::name(e.old_state)),
        state: tcp_state::name(e.new_state),
        reason: (kind == Some(EventKind::RstOut)).then(|| format::rst_reason(e.reason)),
        seq: fin.then_some(e.seq),
        send: e.send,
        recv: e.recv,
    }
}

#[derive(Serialize)]
pub struct UdpJson<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    /// `udp_send`: bytes accepted; `udp_out`: the datagram's payload.
    bytes: u64,
    #[serde(serialize_with = "ser_err", skip_serializing_if = "is_not_err")]
    error: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ret: Option<i64>,
    #[serde(serialize_with = "ser_flags")]
    msg_flags: u32,
    sndbuf: u32,
    wmem_alloc: u32,
    corked: u32,
    pending: bool,
    /// `udp_send` only: the application's call, and whether its error went unseen.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    call: Option<super::json::CallRefJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unseen_error: Option<bool>,
}

pub fn udp(e: &UdpEvent) -> UdpJson<'_> {
    let send = e.hdr.kind == EventKind::UdpSend as u32;
    UdpJson {
        common: Common::new(
            if send { "udp_send" } else { "udp_out" },
            &e.hdr,
            &e.comm,
            &e.addrs,
        ),
        bytes: e.ret.max(0) as u64,
        error: e.ret,
        ret: send.then_some(e.ret),
        msg_flags: e.msg_flags,
        sndbuf: e.sndbuf,
        wmem_alloc: e.wmem_alloc,
        corked: e.corked,
        pending: e.pending != 0,
        call: send.then(|| (&e.call).into()),
        unseen_error: send.then_some(e.flags & RECV_F_UNSEEN != 0),
    }
}
