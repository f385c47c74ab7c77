//! The fill's view of the trace: prints events like `sockbuf trace`, tallies what the report
//! checks, tells the experiment when the writer sleeps, and keeps a progress line.

use std::{
    io::{IsTerminal, Write},
    sync::{Arc, mpsc},
};

use tokio::sync::Notify;
use trace_common::{EventKind, tcp_state, user::Event};

use super::experiment::{Asleep, WriterState};
use crate::{session::EventHandler, trace::Printer};

/// What the trace saw of the client socket.
#[derive(Clone, Debug, Default)]
pub struct Traced {
    pub sends: u64,
    pub copied_bytes: u64,
    pub eagains: u64,
    /// (start, end) of each sleep on a full send buffer.
    pub blocks: Vec<(u64, u64)>,
    /// (time, sk_sndbuf) at each send: sndbuf grows as the kernel autotunes it.
    pub sndbuf: Vec<(u64, u64)>,
    /// Stream offset after the client's last write that copied bytes.
    pub seq_end: u64,
    /// (time, ret) of the client's failed sends other than EAGAIN.
    pub client_errors: Vec<(u64, i64)>,
    /// State changes, RSTs and FINs of the experiment's sockets.
    pub life: Vec<trace_common::SockEvent>,
}

pub struct FillHandler {
    pub printer: Printer,
    pub traced: Traced,
    client_ino: u64,
    asleep_tx: mpsc::Sender<Asleep>,
    writer: Arc<WriterState>,
    progress: Option<Progress>,
    /// Told when the client's kernel has seen its FIN acked (it leaves FIN_WAIT1).
    pub fin_acked: Arc<Notify>,
}

impl FillHandler {
    pub fn new(
        printer: Printer,
        asleep_tx: mpsc::Sender<Asleep>,
        writer: Arc<WriterState>,
        json: bool,
    ) -> Self {
        let progress =
            (!json && std::io::stderr().is_terminal()).then_some(Progress { shown: false });
        Self {
            printer,
            traced: Traced::default(),
            client_ino: 0,
            asleep_tx,
            writer,
            progress,
            fin_acked: Arc::new(Notify::new()),
        }
    }

    /// Only the client's socket counts; it is the first socket that sends.
    fn is_client(&mut self, sock_id: u64) -> bool {
        if self.client_ino == 0 {
            self.client_ino = sock_id;
        }
        sock_id == self.client_ino
    }
}

impl EventHandler for FillHandler {
    fn on_event(&mut self, ev: &Event) {
        if let Some(p) = &mut self.progress {
            p.clear();
        }
        match ev {
            Event::Send(e) if self.is_client(e.hdr.sock_id) => {
                let t = &mut self.traced;
                t.sends += 1;
                t.copied_bytes += e.ret.max(0) as u64;
                t.eagains += u64::from(e.ret == -i64::from(libc::EAGAIN));
                if e.ret > 0 {
                    t.seq_end = e.seq_end;
                } else if e.ret < 0 && e.ret != -i64::from(libc::EAGAIN) {
                    t.client_errors.push((e.hdr.ts_ns, e.ret));
                }
                if t.sndbuf
                    .last()
                    .is_none_or(|&(_, v)| v != u64::from(e.queue.sndbuf))
                {
                    t.sndbuf.push((e.hdr.ts_ns, u64::from(e.queue.sndbuf)));
                }
            }
            Event::BlockStart(e) => {
                let a = Asleep {
                    start_ns: e.start_ns,
                    left: e.left,
                };
                *self.writer.asleep.lock().expect("lock") = Some(a);
                let _ = self.asleep_tx.send(a);
            }
            Event::Block(e) => {
                *self.writer.asleep.lock().expect("lock") = None;
                self.traced.blocks.push((e.start_ns, e.end_ns));
            }
            Event::Sock(e) => {
                if e.hdr.kind == EventKind::State as u32
                    && e.old_state == tcp_state::FIN_WAIT1
                    && e.hdr.sock_id == self.client_ino
                {
                    self.fin_acked.notify_one();
                }
                self.traced.life.push(*e);
            }
            _ => {}
        }
        self.printer.on_event(ev);
    }

    fn on_batch_end(&mut self) {
        self.printer.on_batch_end();
        if let Some(p) = &mut self.progress {
            p.show(&self.traced);
        }
    }
}

/// A status line on stderr, redrawn after each batch and cleared before output and at exit.
struct Progress {
    shown: bool,
}

impl Progress {
    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            self.shown = false;
        }
    }

    fn show(&mut self, t: &Traced) {
        let asleep = if t.blocks.is_empty() {
            ""
        } else {
            ", writer woke"
        };
        eprint!(
            "\r\x1b[Kfill: {} B accepted in {} writes, {} EAGAIN{asleep}",
            t.copied_bytes, t.sends, t.eagains
        );
        let _ = std::io::stderr().flush();
        self.shown = true;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
