//! One JSON object per line. Field names are documented in docs/trace.md; every object has
//! `"kind"`.

use std::io::Write;

use serde::{Serialize, Serializer};
use trace_common::{
    BlockEvent, EventKind, Header, RecvEvent, SEND_F_BLOCKED, SEND_F_LAYERED, SEND_F_REQUESTED,
    SEND_F_UNSEEN, SendEvent, SendQueue, SockEvent, UdpEvent,
    calls::{CALL_F_EXIT_MISSED, CallEvent, CallRef},
};

use super::{
    Gather, Output, SockNames, Totals,
    json_sock::{self, Common, Outcome, Who},
    line,
};
use crate::{
    acks::AckedWrite,
    format::{self, ErrName},
    stacks::Frames,
};

pub struct JsonOutput {
    out: Gather,
    names: SockNames,
}

impl JsonOutput {
    pub fn new(out: Box<dyn Write>) -> Self {
        Self {
            out: Gather::new(out),
            names: SockNames::default(),
        }
    }

    fn line(&mut self, v: &impl Serialize) -> std::io::Result<()> {
        let buf = self.out.buf();
        line::write(buf, v)?;
        buf.push(b'\n');
        Ok(())
    }
}

pub(super) fn ser_err<S: Serializer>(ret: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&ErrName(*ret))
}

pub(super) fn ser_flags<S: Serializer>(flags: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(format::msg_flag_names(*flags))
}

#[derive(Serialize)]
struct SendJson<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    start_ns: u64,
    duration_ns: u64,
    requested: Option<u64>,
    #[serde(flatten)]
    outcome: Outcome,
    blocked: bool,
    #[serde(flatten)]
    queue: SendQueue,
    seq_start: u64,
    seq_end: u64,
    #[serde(flatten)]
    call: CallRefJson,
    /// An error its application call did not return (see `SEND_F_UNSEEN`).
    unseen_error: bool,
    /// Bytes the call put into TCP, where known (see `SendEvent::tcp_bytes`).
    tcp_bytes: Option<u64>,
    /// A layer above TCP (kTLS) took the bytes (see `SEND_F_LAYERED`).
    layered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<&'a Frames>,
}

/// The application call a kernel send was, or was a piece of.
#[derive(Serialize)]
pub(super) struct CallRefJson {
    #[serde(serialize_with = "ser_syscall")]
    syscall: u32,
    call_ns: u64,
    piece: u32,
}

impl From<&CallRef> for CallRefJson {
    fn from(c: &CallRef) -> Self {
        Self {
            syscall: c.syscall,
            call_ns: c.call_ns,
            piece: c.piece,
        }
    }
}

fn ser_syscall<S: Serializer>(nr: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format::SyscallName(*nr))
}

pub(super) fn is_not_err(ret: &i64) -> bool {
    *ret >= 0
}

/// The task and socket of an event without addresses of its own (ports `null` until an
/// event with them was seen).
#[derive(Serialize)]
struct TaskSock<'a> {
    #[serde(flatten)]
    who: Who<'a>,
    lport: Option<u16>,
    rport: Option<u16>,
}

impl<'a> TaskSock<'a> {
    fn new(hdr: &Header, comm: &'a [u8; 16], names: &SockNames) -> Self {
        let addrs = names.get(hdr.sock_id);
        Self {
            who: Who::new(hdr, comm),
            lport: addrs.map(|a| a.lport),
            rport: addrs.map(|a| a.rport),
        }
    }
}

#[derive(Serialize)]
struct BlockJson<'a> {
    kind: &'static str,
    ts_ns: u64,
    start_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ns: Option<u64>,
    #[serde(flatten)]
    who: TaskSock<'a>,
    left: u64,
    sndbuf: u32,
    wmem_queued: u32,
    send_q: u32,
    unsent: u32,
    in_flight: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<&'a Frames>,
}

#[derive(Serialize)]
struct AckJson {
    kind: &'static str,
    ts_ns: u64,
    pid: u32,
    tid: u32,
    sock_id: u64,
    lport: Option<u16>,
    rport: Option<u16>,
    seq_start: u64,
    seq_end: u64,
    write_ns: u64,
    acked_ns: u64,
    /// `ack`: an ACK seen arriving; `state`: a state change showed the bytes acknowledged
    /// (after ESTABLISHED), `acked_ns` an upper bound.
    settled_by: &'static str,
}

/// A `sendfile()`, `splice()` or `sendmmsg()` returned: what the application got.
#[derive(Serialize)]
struct CallJson<'a> {
    kind: &'static str,
    ts_ns: u64,
    #[serde(flatten)]
    who: TaskSock<'a>,
    #[serde(serialize_with = "ser_syscall")]
    syscall: u32,
    call_ns: u64,
    duration_ns: u64,
    pieces: u32,
    ret: i64,
    #[serde(serialize_with = "ser_err", skip_serializing_if = "is_not_err")]
    error: i64,
    copied: u64,
    errors: u32,
    /// The kernel skipped the call's exit: `ret` unknown (0).
    exit_missed: bool,
}

#[derive(Serialize)]
struct StartJson<'a> {
    kind: &'static str,
    attach: &'a str,
    refused: &'a [String],
    pid: u32,
}

#[derive(Serialize)]
struct EndJson<'a> {
    kind: &'static str,
    #[serde(flatten)]
    totals: &'a Totals,
}

impl Output for JsonOutput {
    fn start(&mut self, attach: &str, refused: &[String]) -> std::io::Result<()> {
        self.line(&StartJson {
            kind: "start",
            attach,
            refused,
            pid: std::process::id(),
        })
    }

    fn send(&mut self, e: &SendEvent, stack: Option<&Frames>) -> std::io::Result<()> {
        self.names.learn(e.hdr.sock_id, &e.addrs);
        let tcp_bytes = e.tcp_bytes();
        self.line(&SendJson {
            common: Common::new("send", &e.hdr, &e.comm, &e.addrs),
            start_ns: e.start_ns,
            duration_ns: if e.start_ns != 0 {
                e.hdr.ts_ns.saturating_sub(e.start_ns)
            } else {
                0
            },
            requested: (e.flags & SEND_F_REQUESTED != 0).then_some(e.requested),
            outcome: Outcome::new(e.ret, e.msg_flags),
            blocked: e.flags & SEND_F_BLOCKED != 0,
            queue: e.queue,
            seq_start: e.seq_start(),
            seq_end: e.seq_end,
            call: (&e.call).into(),
            unseen_error: e.flags & SEND_F_UNSEEN != 0,
            tcp_bytes,
            layered: e.flags & SEND_F_LAYERED != 0,
            stack,
        })
    }

    fn block(&mut self, e: &BlockEvent, stack: Option<&Frames>) -> std::io::Result<()> {
        let asleep = e.hdr.kind == EventKind::BlockStart as u32;
        self.line(&BlockJson {
            kind: if asleep { "block_start" } else { "block" },
            ts_ns: e.hdr.ts_ns,
            start_ns: e.start_ns,
            end_ns: (!asleep).then_some(e.end_ns),
            duration_ns: (!asleep).then(|| e.end_ns.saturating_sub(e.start_ns)),
            who: TaskSock::new(&e.hdr, &e.comm, &self.names),
            left: e.left,
            sndbuf: e.queue.sndbuf,
            wmem_queued: e.queue.wmem_queued,
            send_q: e.queue.send_q,
            unsent: e.queue.unsent,
            in_flight: e.queue.in_flight,
            stack,
        })
    }

    fn ack(&mut self, w: &AckedWrite) -> std::io::Result<()> {
        let addrs = self.names.get(w.sock_id).copied();
        self.line(&AckJson {
            kind: "ack",
            ts_ns: w.ack_ts_ns,
            pid: w.pid,
            tid: w.tid,
            sock_id: w.sock_id,
            lport: addrs.map(|a| a.lport),
            rport: addrs.map(|a| a.rport),
            seq_start: w.seq_start,
            seq_end: w.seq_end,
            write_ns: w.write_ns,
            acked_ns: w.acked_ns(),
            settled_by: w.settled_by.name(),
        })
    }

    fn recv(&mut self, e: &RecvEvent) -> std::io::Result<()> {
        self.names.learn(e.hdr.sock_id, &e.addrs);
        self.line(&json_sock::recv(e))
    }

    fn sock(&mut self, e: &SockEvent) -> std::io::Result<()> {
        self.names.forget_closed(e);
        self.line(&json_sock::sock(e))
    }

    fn udp(&mut self, e: &UdpEvent) -> std::io::Result<()> {
        self.line(&json_sock::udp(e))
    }

    fn call(&mut self, e: &CallEvent) -> std::io::Result<()> {
        self.line(&CallJson {
            kind: "call",
            ts_ns: e.hdr.ts_ns,
            who: TaskSock::new(&e.hdr, &e.comm, &self.names),
            syscall: e.call.syscall,
            call_ns: e.call.call_ns,
            duration_ns: e.hdr.ts_ns.saturating_sub(e.call.call_ns),
            pieces: e.call.piece,
            ret: e.ret,
            error: e.ret,
            copied: e.copied,
            errors: e.errors,
            exit_missed: e.flags & CALL_F_EXIT_MISSED != 0,
        })
    }

    fn end(&mut self, t: &Totals) -> std::io::Result<()> {
        self.line(&EndJson {
            kind: "end",
            totals: t,
        })
    }

    fn event_done(&mut self) -> std::io::Result<()> {
        self.out.event_done()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
