//! Text lines of receive calls, connection lifecycle (state, RST, FIN) and UDP events, in
//! the same columns as sends.

use std::{
    fmt::Display,
    io::{self, Write},
};

use trace_common::{
    EventKind, Header, RECV_F_UNSEEN, RecvEvent, SendQueue, SockEvent, UdpEvent,
    calls::{self, CallRef, nr},
    tcp_state,
};

use crate::format::{self, ErrName, MsgFlags, SyscallName};

/// TIME PID TID COMM EVENT.
fn prefix(
    out: &mut dyn Write,
    secs: f64,
    hdr: &Header,
    comm: &[u8; 16],
    event: &str,
) -> io::Result<()> {
    write!(
        out,
        "{secs:>11.6} {:>7} {:>7} {:<15} {event:<5} ",
        hdr.pid,
        hdr.tid,
        format::comm_str(comm)
    )
}

/// REQ and RESULT columns: none, and a byte count or an errno name.
fn result(out: &mut dyn Write, ret: i64) -> io::Result<()> {
    if ret >= 0 {
        write!(out, "{:>8} {ret:>8} ", "-")
    } else {
        write!(out, "{:>8} {:>8} ", "-", ErrName(ret))
    }
}

fn send_cols(out: &mut dyn Write, q: &SendQueue) -> io::Result<()> {
    write!(
        out,
        "{:>8} {:>8} {:>8} {:>8}  ",
        q.send_q, q.unsent, q.in_flight, q.sndbuf
    )
}

fn no_send_cols(out: &mut dyn Write, sndbuf: Option<u32>) -> io::Result<()> {
    match sndbuf {
        Some(b) => write!(out, "{:>8} {:>8} {:>8} {b:>8}  ", "-", "-", "-"),
        None => write!(out, "{:>8} {:>8} {:>8} {:>8}  ", "-", "-", "-", "-"),
    }
}

fn flags(out: &mut dyn Write, f: u32) -> io::Result<()> {
    if f != 0 {
        write!(out, " [{}]", MsgFlags(f))?;
    }
    writeln!(out)
}

/// The application's call a kernel call belongs to, where it is not one of the `usual`
/// syscalls that make one kernel call each: `recvmmsg piece 2`, `via io_uring_enter`.
pub fn call(out: &mut dyn Write, call: &CallRef, usual: &[u32]) -> io::Result<()> {
    if calls::pieced(call.syscall) {
        write!(out, " {} piece {}", SyscallName(call.syscall), call.piece)
    } else if !usual.contains(&call.syscall) {
        write!(out, " via {}", SyscallName(call.syscall))
    } else {
        Ok(())
    }
}

pub fn recv(out: &mut dyn Write, secs: f64, e: &RecvEvent, conn: &dyn Display) -> io::Result<()> {
    prefix(out, secs, &e.hdr, &e.comm, "recv")?;
    result(out, e.ret)?;
    no_send_cols(out, None)?;
    let q = &e.queue;
    if e.protocol == 6 {
        write!(out, "recv-q {} ", q.recv_q)?;
    }
    write!(
        out,
        "rcvbuf {} rmem {} {} ({conn})",
        q.rcvbuf,
        q.rmem_alloc,
        format::protocol_name(e.protocol)
    )?;
    call(
        out,
        &e.call,
        &[nr::READ, nr::READV, nr::RECVFROM, nr::RECVMSG],
    )?;
    if e.flags & RECV_F_UNSEEN != 0 {
        write!(out, " (not returned to the application)")?;
    }
    flags(out, e.msg_flags)
}

pub fn sock(out: &mut dyn Write, secs: f64, e: &SockEvent, conn: &dyn Display) -> io::Result<()> {
    let kind = EventKind::from_u32(e.hdr.kind);
    let name = match kind {
        Some(EventKind::State) => "state",
        Some(EventKind::RstOut) => "rst>",
        Some(EventKind::RstIn) => "rst<",
        Some(EventKind::FinOut) => "fin>",
        _ => "fin<",
    };
    prefix(out, secs, &e.hdr, &e.comm, name)?;
    write!(out, "{:>8} {:>8} ", "-", "-")?;
    send_cols(out, &e.send)?;
    let state = tcp_state::name(e.new_state);
    let recv_q = e.recv.recv_q;
    match kind {
        Some(EventKind::State) => {
            write!(out, "{} -> {state}", tcp_state::name(e.old_state))?;
            let dropped = format::dropped_at_close(e);
            if dropped > 0 {
                write!(out, ", {dropped} unread B thrown away")?;
            } else if recv_q > 0 && e.new_state != 7 {
                write!(out, ", {recv_q} B unread in the receive queue")?;
            }
        }
        Some(EventKind::RstOut) => write!(
            out,
            "RST sent ({}) in {state}, {recv_q} B unread",
            format::rst_reason(e.reason)
        )?,
        Some(EventKind::RstIn) => write!(out, "RST received in {state}")?,
        Some(EventKind::FinOut) => write!(out, "FIN sent at seq {}", e.seq)?,
        _ => write!(out, "FIN received after {} data bytes", e.seq)?,
    }
    writeln!(out, " ({conn})")
}

pub fn udp(out: &mut dyn Write, secs: f64, e: &UdpEvent) -> io::Result<()> {
    let send = e.hdr.kind == EventKind::UdpSend as u32;
    prefix(
        out,
        secs,
        &e.hdr,
        &e.comm,
        if send { "usend" } else { "uout" },
    )?;
    result(out, e.ret)?;
    no_send_cols(out, Some(e.sndbuf))?;
    if send {
        write!(out, "corked {} wmem {}", e.corked, e.wmem_alloc)?;
    } else {
        write!(out, "datagram of {} B left, wmem {}", e.ret, e.wmem_alloc)?;
    }
    let a = &e.addrs;
    write!(
        out,
        "  {}:{} > {}:{}",
        format::local_ip(a),
        a.lport,
        format::remote_ip(a),
        a.rport
    )?;
    if send {
        call(
            out,
            &e.call,
            &[nr::SENDTO, nr::SENDMSG, nr::WRITE, nr::WRITEV],
        )?;
    }
    flags(out, e.msg_flags)
}
