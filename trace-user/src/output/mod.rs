//! Event output: aligned text for people, NDJSON for programs. Both write into a buffered
//! stdout and format without allocating per event; the session flushes after each batch.

mod json;
mod json_sock;
mod line;
mod text;
mod text_sock;

use std::{collections::HashMap, io::Write};

pub use json::JsonOutput;
pub use text::TextOutput;
use trace_common::{
    BlockEvent, EventKind, RecvEvent, SendEvent, SockAddrs, SockEvent, UdpEvent, calls::CallEvent,
    tcp_state, user::Event,
};

use crate::{acks::AckedWrite, stacks::Frames};

/// Totals printed when a session ends.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Totals {
    pub sends: u64,
    pub blocks: u64,
    pub acks: u64,
    /// Records read from the ring buffer (every kind, before any userspace processing).
    pub records: u64,
    /// The same, by kind.
    pub records_by_kind: RecordsByKind,
    /// Events the kernel could not write because the ring buffer was full.
    pub lost: u64,
    /// Events the kernel abandoned (a failed kernel read or a full map).
    pub faults: u64,
    /// Program runs the kernel skipped (recursion on a CPU): events that never existed.
    pub missed: u64,
    /// Writes still waiting for an ACK when the session ended.
    pub unacked: u64,
    /// `--stacks`: stacks the kernel could not take (its map full, or the walk failed).
    pub stacks_lost: u64,
    pub duration_ns: u64,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RecordsByKind {
    pub send: u64,
    pub block_start: u64,
    pub block: u64,
    pub ack: u64,
    pub recv: u64,
    pub state: u64,
    pub rst_out: u64,
    pub rst_in: u64,
    pub fin_out: u64,
    pub fin_in: u64,
    pub udp_send: u64,
    pub udp_out: u64,
    pub call: u64,
    pub stack_top: u64,
}

impl RecordsByKind {
    /// Counts one record under its kind.
    pub fn count(&mut self, ev: &Event) {
        let n = match EventKind::from_u32(ev.header().kind) {
            Some(EventKind::Send) => &mut self.send,
            Some(EventKind::BlockStart) => &mut self.block_start,
            Some(EventKind::Block) => &mut self.block,
            Some(EventKind::Ack) => &mut self.ack,
            Some(EventKind::Recv) => &mut self.recv,
            Some(EventKind::State) => &mut self.state,
            Some(EventKind::RstOut) => &mut self.rst_out,
            Some(EventKind::RstIn) => &mut self.rst_in,
            Some(EventKind::FinOut) => &mut self.fin_out,
            Some(EventKind::FinIn) => &mut self.fin_in,
            Some(EventKind::UdpSend) => &mut self.udp_send,
            Some(EventKind::UdpOut) => &mut self.udp_out,
            Some(EventKind::Call) => &mut self.call,
            Some(EventKind::StackTop) => &mut self.stack_top,
            None => return,
        };
        *n += 1;
    }
}

/// Socket addresses seen in events that carry them, so block and ACK lines can name the
/// connection.
#[derive(Default)]
pub struct SockNames(HashMap<u64, SockAddrs>);

impl SockNames {
    /// The latest addresses win: a connecting socket has no local port at first.
    pub fn learn(&mut self, sock_id: u64, addrs: &SockAddrs) {
        self.0.insert(sock_id, *addrs);
    }

    pub fn get(&self, sock_id: u64) -> Option<&SockAddrs> {
        self.0.get(&sock_id)
    }

    /// A socket that reached CLOSE is forgotten (its last lines are printed with it), so
    /// that a long trace of many short connections does not grow; other events learn.
    pub fn forget_closed(&mut self, e: &SockEvent) {
        if e.hdr.kind == EventKind::State as u32 && e.new_state == tcp_state::CLOSE {
            self.0.remove(&e.hdr.sock_id);
        } else {
            self.learn(e.hdr.sock_id, &e.addrs);
        }
    }
}

pub trait Output {
    /// Before the first event: the backend in use.
    fn start(&mut self, attach: &str, refused: &[String]) -> std::io::Result<()>;
    /// A send call; `stack`: where it returned from (`--stacks`).
    fn send(&mut self, e: &SendEvent, stack: Option<&Frames>) -> std::io::Result<()>;
    /// A sender fell asleep (`kind` BlockStart) or woke (`kind` Block); `stack`: where.
    fn block(&mut self, e: &BlockEvent, stack: Option<&Frames>) -> std::io::Result<()>;
    fn ack(&mut self, w: &AckedWrite) -> std::io::Result<()>;
    fn recv(&mut self, e: &RecvEvent) -> std::io::Result<()>;
    /// A state change, RST or FIN (`hdr.kind` says which).
    fn sock(&mut self, e: &SockEvent) -> std::io::Result<()>;
    /// A UDP send call or datagram out (`hdr.kind` says which).
    fn udp(&mut self, e: &UdpEvent) -> std::io::Result<()>;
    /// A `sendfile()`, `splice()` or `sendmmsg()` returned to the application.
    fn call(&mut self, e: &CallEvent) -> std::io::Result<()>;
    fn end(&mut self, t: &Totals) -> std::io::Result<()>;
    /// After each event's lines (see [`Gather`]).
    fn event_done(&mut self) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}

/// Text or JSON, chosen at run time; `header`: the text column header (not for summaries).
/// Output gathered in memory and handed to the real writer at each flush, or once an event
/// leaves a [`CHUNK`] or more. An event's line is written in many small pieces ([`line`],
/// `write!`): into a Vec each is a plain copy, where through `dyn Write` each was a call into
/// the buffered writer (a third of the consumer's time, measured with `sockbuf replay`).
pub struct Gather {
    inner: Box<dyn Write>,
    buf: Vec<u8>,
}

/// What [`Gather`] hands over at a time (at most: a ring buffer's batch ends sooner). Large
/// writes let the page cache use large folios: into a file on ext4, 1 MiB chunks made JSON
/// output a fifth faster than 64 KiB ones (`sockbuf replay`, 0.83 → 1.0 M events/s).
pub const CHUNK: usize = 1 << 20;

impl Gather {
    pub fn new(inner: Box<dyn Write>) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(2 * CHUNK),
        }
    }

    /// An event's lines are complete: hands them over once a chunk has gathered.
    pub fn event_done(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(())
    }

    /// The buffer itself, for writers that append to a `Vec` faster than through `Write`.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn hand_over(&mut self) -> std::io::Result<()> {
        let r = self.inner.write_all(&self.buf);
        self.buf.clear();
        r
    }
}

impl Write for Gather {
    #[inline]
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    #[inline]
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(b);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.hand_over()?;
        self.inner.flush()
    }
}

pub fn new_output(json: bool, out: Box<dyn Write>, t0_ns: u64, header: bool) -> Box<dyn Output> {
    if json {
        Box::new(JsonOutput::new(out))
    } else {
        Box::new(TextOutput::new(out, t0_ns, header))
    }
}
