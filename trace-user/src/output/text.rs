//! Aligned columns, one line per event, bcc style.

use std::io::Write;

use trace_common::{
    BlockEvent, EventKind, RecvEvent, SEND_F_LAYERED, SEND_F_REQUESTED, SEND_F_UNSEEN, SendEvent,
    SockAddrs, SockEvent, UdpEvent,
    calls::{CALL_F_EXIT_MISSED, CallEvent, nr},
};

use super::{Gather, Output, SockNames, Totals, text_sock};
use crate::{
    acks::AckedWrite,
    format::{self, ErrName, MsgFlags, Nanos, SyscallName},
    stacks::Frames,
};

pub struct TextOutput {
    out: Gather,
    t0_ns: u64,
    names: SockNames,
    header: bool,
}

impl TextOutput {
    /// A stack's short form on a line of its own under its event's.
    fn stack(&mut self, stack: Option<&Frames>) -> std::io::Result<()> {
        match stack {
            Some(f) => writeln!(self.out, "{:>11} stack: {}", "", f.short()),
            None => Ok(()),
        }
    }

    pub fn new(out: Box<dyn Write>, t0_ns: u64, header: bool) -> Self {
        Self {
            out: Gather::new(out),
            t0_ns,
            names: SockNames::default(),
            header,
        }
    }

    fn secs(&self, ts: u64) -> f64 {
        ts.saturating_sub(self.t0_ns) as f64 / 1e9
    }

    fn conn(&self, sock_id: u64) -> Conn {
        Conn(self.names.get(sock_id).copied(), sock_id)
    }
}

/// A connection's ports when a send event named them, else its inode.
struct Conn(Option<SockAddrs>, u64);

impl std::fmt::Display for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(a) => write!(f, "{} > {}", a.lport, a.rport),
            None => write!(f, "ino {}", self.1),
        }
    }
}

impl Output for TextOutput {
    fn start(&mut self, attach: &str, refused: &[String]) -> std::io::Result<()> {
        let mut why = String::new();
        for r in refused {
            why.push_str("; ");
            why.push_str(r);
        }
        eprintln!("sockbuf: attached with {attach}{why}. Ctrl-C to stop.");
        if !self.header {
            return Ok(());
        }
        writeln!(
            self.out,
            "{:>11} {:>7} {:>7} {:<15} {:<5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  DETAIL",
            "TIME(s)",
            "PID",
            "TID",
            "COMM",
            "EVENT",
            "REQ",
            "RESULT",
            "SEND-Q",
            "UNSENT",
            "INFLIGHT",
            "SNDBUF"
        )
    }

    fn send(&mut self, e: &SendEvent, stack: Option<&Frames>) -> std::io::Result<()> {
        self.names.learn(e.hdr.sock_id, &e.addrs);
        let t = self.secs(e.hdr.ts_ns);
        write!(
            self.out,
            "{t:>11.6} {:>7} {:>7} {:<15} send  ",
            e.hdr.pid,
            e.hdr.tid,
            format::comm_str(&e.comm)
        )?;
        if e.flags & SEND_F_REQUESTED != 0 {
            write!(self.out, "{:>8} ", e.requested)?;
        } else {
            write!(self.out, "{:>8} ", "-")?;
        }
        if e.ret >= 0 {
            write!(self.out, "{:>8} ", e.ret)?;
        } else {
            write!(self.out, "{:>8} ", ErrName(e.ret))?;
        }
        let q = &e.queue;
        write!(
            self.out,
            "{:>8} {:>8} {:>8} {:>8}  {}:{} > {}:{} seq {}-{}",
            q.send_q,
            q.unsent,
            q.in_flight,
            q.sndbuf,
            format::local_ip(&e.addrs),
            e.addrs.lport,
            format::remote_ip(&e.addrs),
            e.addrs.rport,
            e.seq_start(),
            e.seq_end,
        )?;
        if e.msg_flags != 0 {
            write!(self.out, " [{}]", MsgFlags(e.msg_flags))?;
        }
        text_sock::call(
            &mut self.out,
            &e.call,
            &[nr::WRITE, nr::WRITEV, nr::SENDTO, nr::SENDMSG],
        )?;
        if e.flags & SEND_F_UNSEEN != 0 {
            write!(self.out, " (not returned to the application)")?;
        }
        if e.flags & SEND_F_LAYERED != 0
            && let Some(n) = e.tcp_bytes()
        {
            write!(self.out, " ({n} B into TCP: kTLS)")?;
        }
        writeln!(self.out)?;
        self.stack(stack)
    }

    fn block(&mut self, e: &BlockEvent, stack: Option<&Frames>) -> std::io::Result<()> {
        let asleep = e.hdr.kind == EventKind::BlockStart as u32;
        let t = self.secs(if asleep { e.start_ns } else { e.end_ns });
        let q = &e.queue;
        write!(
            self.out,
            "{t:>11.6} {:>7} {:>7} {:<15} {:<5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  ",
            e.hdr.pid,
            e.hdr.tid,
            format::comm_str(&e.comm),
            if asleep { "sleep" } else { "wake" },
            e.left,
            "-",
            q.send_q,
            q.unsent,
            q.in_flight,
            q.sndbuf,
        )?;
        let conn = self.conn(e.hdr.sock_id);
        if asleep {
            writeln!(
                self.out,
                "asleep on a full send buffer, {} B left to copy ({conn})",
                e.left
            )?;
        } else {
            let slept = Nanos(e.end_ns.saturating_sub(e.start_ns));
            writeln!(
                self.out,
                "woke after {slept} blocked on a full send buffer ({conn})"
            )?;
        }
        self.stack(stack)
    }

    fn ack(&mut self, w: &AckedWrite) -> std::io::Result<()> {
        let t = self.secs(w.ack_ts_ns);
        writeln!(
            self.out,
            "{t:>11.6} {:>7} {:>7} {:<15} ack   {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  seq {}-{} acked {}{} after the write ({})",
            w.pid,
            w.tid,
            "",
            w.seq_end - w.seq_start,
            "-",
            "-",
            "-",
            "-",
            "-",
            w.seq_start,
            w.seq_end,
            if w.settled_by.upper_bound() {
                "at most "
            } else {
                ""
            },
            Nanos(w.acked_ns()),
            self.conn(w.sock_id),
        )
    }

    fn recv(&mut self, e: &RecvEvent) -> std::io::Result<()> {
        self.names.learn(e.hdr.sock_id, &e.addrs);
        let (secs, conn) = (self.secs(e.hdr.ts_ns), self.conn(e.hdr.sock_id));
        text_sock::recv(&mut self.out, secs, e, &conn)
    }

    fn sock(&mut self, e: &SockEvent) -> std::io::Result<()> {
        self.names.learn(e.hdr.sock_id, &e.addrs);
        let (secs, conn) = (self.secs(e.hdr.ts_ns), self.conn(e.hdr.sock_id));
        self.names.forget_closed(e);
        text_sock::sock(&mut self.out, secs, e, &conn)
    }

    fn udp(&mut self, e: &UdpEvent) -> std::io::Result<()> {
        let secs = self.secs(e.hdr.ts_ns);
        text_sock::udp(&mut self.out, secs, e)
    }

    fn call(&mut self, e: &CallEvent) -> std::io::Result<()> {
        let t = self.secs(e.hdr.ts_ns);
        write!(
            self.out,
            "{t:>11.6} {:>7} {:>7} {:<15} call  {:>8} ",
            e.hdr.pid,
            e.hdr.tid,
            format::comm_str(&e.comm),
            "-",
        )?;
        if e.flags & CALL_F_EXIT_MISSED != 0 {
            write!(self.out, "{:>8} ", "?")?;
        } else if e.ret >= 0 {
            write!(self.out, "{:>8} ", e.ret)?;
        } else {
            write!(self.out, "{:>8} ", ErrName(e.ret))?;
        }
        writeln!(
            self.out,
            "{:>8} {:>8} {:>8} {:>8}  {} returned after {}: {} kernel sends copied {} B ({})",
            "-",
            "-",
            "-",
            "-",
            SyscallName(e.call.syscall),
            Nanos(e.hdr.ts_ns.saturating_sub(e.call.call_ns)),
            e.call.piece,
            e.copied,
            self.conn(e.hdr.sock_id),
        )
    }

    fn end(&mut self, t: &Totals) -> std::io::Result<()> {
        let k = &t.records_by_kind;
        let life = k.state + k.rst_out + k.rst_in + k.fin_out + k.fin_in;
        writeln!(
            self.out,
            "sockbuf: {} sends, {} blocks, {} acked writes, {} receives, {} lifecycle, {} UDP sends in {:.2}s; {} records read, {} lost, {} faults, {} missed",
            t.sends,
            t.blocks,
            t.acks,
            k.recv,
            life,
            k.udp_send,
            t.duration_ns as f64 / 1e9,
            t.records,
            t.lost,
            t.faults,
            t.missed
        )
    }

    fn event_done(&mut self) -> std::io::Result<()> {
        self.out.event_done()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
