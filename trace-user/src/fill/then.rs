//! What happens after the fill: `--then close-unread` (the server closes with unread data in
//! its receive queue: the kernel throws the data away and resets the connection) and
//! `--then close-unsent` (the client closes with a full send queue: the kernel still sends
//! every byte, then the FIN).

use std::{
    io::{ErrorKind, Read},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use socket2::Socket;
use trace_common::{EventKind, SockEvent, tcp_state};

use super::handler::Traced;
use crate::{
    format::{self, monotonic_ns},
    lab::{Check, check},
    sockio as sock,
};

/// How long the client keeps trying to write after the server's close (RST) or the server
/// keeps reading after the client's close (FIN).
const AFTER_CLOSE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Then {
    /// The server closes without reading: unread data is dropped and a RST sent; the
    /// client's next write fails with ECONNRESET.
    CloseUnread,
    /// The client closes with a full send queue; then the server reads: every byte arrives,
    /// and the FIN follows the last one.
    CloseUnsent,
}

/// What the experiment measured around the close.
#[derive(Clone, Debug, Default)]
pub struct ThenMeasured {
    pub close_ns: u64,
    /// close-unread: SIOCINQ of the server just before it closed.
    pub unread_at_close: u64,
    /// close-unread: the client's first error after the close (errno), and the write calls
    /// it took to get it (EAGAIN until the reset arrives).
    pub client_errno: i32,
    pub write_calls: u64,
    pub eagains: u64,
    /// close-unsent: SIOCOUTQ and SIOCOUTQNSD of the client just before it closed.
    pub queued_at_close: u64,
    pub unsent_at_close: u64,
    /// close-unsent: bytes the server read until end of file.
    pub server_read_bytes: u64,
}

/// The server closes with data in its receive queue; the client writes until it fails.
pub fn close_unread(client: &Socket, server: Socket) -> anyhow::Result<ThenMeasured> {
    let mut m = ThenMeasured {
        unread_at_close: sock::inq(&server)?,
        close_ns: monotonic_ns(),
        ..Default::default()
    };
    drop(server);
    client.set_nonblocking(true)?;
    let t0 = Instant::now();
    loop {
        m.write_calls += 1;
        match client.send(b"x") {
            Err(e) if e.kind() == ErrorKind::WouldBlock && t0.elapsed() < AFTER_CLOSE_LIMIT => {
                m.eagains += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                m.client_errno = e.raw_os_error().unwrap_or(0);
                return Ok(m);
            }
            Ok(_) => anyhow::bail!("the client could write after the server's reset"),
        }
    }
}

/// The client closes with a full send queue; the server then reads to end of file.
pub fn close_unsent(client: Socket, server: &Socket) -> anyhow::Result<ThenMeasured> {
    let mut m = ThenMeasured {
        queued_at_close: sock::outq(&client)?,
        unsent_at_close: sock::outq_unsent(&client)?,
        close_ns: monotonic_ns(),
        ..Default::default()
    };
    drop(client);
    server.set_read_timeout(Some(AFTER_CLOSE_LIMIT))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut srv = server;
    loop {
        match srv
            .read(&mut buf)
            .context("server read after the client's close")?
        {
            0 => return Ok(m),
            n => m.server_read_bytes += n as u64,
        }
    }
}

/// The close, as measured and as traced; serialized as `then` in the fill report.
#[derive(Clone, Debug, Serialize)]
pub struct ThenReport {
    pub then: Then,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    pub checks: Vec<Check>,
    #[serde(skip)]
    pub story: Vec<String>,
}

/// The lifecycle events of socket `ino`, in order.
fn life(t: &Traced, ino: u64) -> impl Iterator<Item = &SockEvent> {
    t.life.iter().filter(move |e| e.hdr.sock_id == ino)
}

fn kind_is(e: &SockEvent, k: EventKind) -> bool {
    e.hdr.kind == k as u32
}

impl ThenReport {
    pub fn new(
        then: Then,
        m: &ThenMeasured,
        t: &Traced,
        client: u64,
        server: u64,
        accepted: u64,
    ) -> Self {
        let mut r = Self {
            then,
            fields: serde_json::Map::new(),
            checks: Vec::new(),
            story: Vec::new(),
        };
        match then {
            Then::CloseUnread => r.close_unread(m, t, client, server),
            Then::CloseUnsent => r.close_unsent(m, t, client, server, accepted),
        }
        r
    }

    fn field(&mut self, name: &str, v: impl Serialize) {
        let v = serde_json::to_value(v).unwrap_or_default();
        self.fields.insert(name.to_owned(), v);
    }

    fn close_unread(&mut self, m: &ThenMeasured, t: &Traced, client: u64, server: u64) {
        let closed = life(t, server).find(|e| {
            kind_is(e, EventKind::State)
                && e.old_state == tcp_state::ESTABLISHED
                && e.new_state == tcp_state::CLOSE
        });
        let rst_out = life(t, server).find(|e| kind_is(e, EventKind::RstOut));
        let rst_in = life(t, client).find(|e| kind_is(e, EventKind::RstIn));
        let dropped = closed.map_or(0, |e| u64::from(e.recv.recv_q));
        let errno = m.client_errno;
        let traced_err = t.client_errors.first().map_or(0, |(_, ret)| -*ret);
        self.field("unread_at_close_bytes", m.unread_at_close);
        self.field("traced_dropped_bytes", dropped);
        self.field("rst_reason", rst_out.map(|e| format::rst_reason(e.reason)));
        self.field(
            "client_error",
            format::ErrName(-i64::from(errno)).to_string(),
        );
        self.story.push(format!(
            "the server closed with {} B unread: state ESTABLISHED -> CLOSE with {dropped} B in its receive queue, thrown away",
            m.unread_at_close
        ));
        if let Some(e) = rst_out {
            self.story.push(format!(
                "RST sent by the server ({}), received by the client: {}",
                format::rst_reason(e.reason),
                if rst_in.is_some() { "yes" } else { "no" }
            ));
        }
        self.story.push(format!(
            "the client's next write failed with {}",
            format::ErrName(-i64::from(errno))
        ));
        self.checks.extend([
            Check {
                name: "close_dropped_unread",
                what: "bytes unread when the server closed (SIOCINQ) == traced receive queue at CLOSE (and > 0)",
                left: m.unread_at_close,
                right: dropped,
                pass: closed.is_some() && m.unread_at_close > 0 && m.unread_at_close == dropped,
            },
            check(
                "rst_sent_and_received",
                "traced RSTs: sent by the server, received by the client (1 = both)",
                u64::from(rst_out.is_some() && rst_in.is_some()),
                1,
            ),
            Check {
                name: "client_got_econnreset",
                what: "client errno after the reset == ECONNRESET == the traced send's error",
                left: u64::from(errno as u32),
                right: traced_err as u64,
                pass: errno == libc::ECONNRESET && traced_err == i64::from(libc::ECONNRESET),
            },
        ]);
    }

    fn close_unsent(
        &mut self,
        m: &ThenMeasured,
        t: &Traced,
        client: u64,
        server: u64,
        accepted: u64,
    ) {
        let closing = life(t, client)
            .find(|e| kind_is(e, EventKind::State) && e.new_state == tcp_state::FIN_WAIT1);
        let fin_out = life(t, client).find(|e| kind_is(e, EventKind::FinOut));
        let fin_in = life(t, server).find(|e| kind_is(e, EventKind::FinIn));
        let fin_acked = life(t, client).find(|e| {
            kind_is(e, EventKind::State)
                && e.old_state == tcp_state::FIN_WAIT1
                && e.new_state == tcp_state::FIN_WAIT2
        });
        self.field("queued_at_close_bytes", m.queued_at_close);
        self.field("unsent_at_close_bytes", m.unsent_at_close);
        self.field("server_read_bytes", m.server_read_bytes);
        self.field("traced_queue_at_close", closing.map(|e| e.send.send_q));
        self.field("fin_seq", fin_out.map(|e| e.seq));
        // More than one when the segment with the FIN was sent again (a tail-loss probe or
        // a timeout while the peer's ACK was slow).
        let fin_sends = life(t, client)
            .filter(|e| kind_is(e, EventKind::FinOut))
            .count();
        self.field("fin_sends", fin_sends);
        self.field("fin_received_after_bytes", fin_in.map(|e| e.seq));
        self.field(
            "fin_sent_after_close_ns",
            fin_out.map(|e| e.hdr.ts_ns.saturating_sub(m.close_ns)),
        );
        self.field(
            "fin_acked_after_close_ns",
            fin_acked.map(|e| e.hdr.ts_ns.saturating_sub(m.close_ns)),
        );
        self.field("send_queue_at_fin_ack", fin_acked.map(|e| e.send.send_q));
        if let Some(e) = fin_out {
            self.story.push(format!(
                "the client closed with {} B queued ({} never sent); the FIN left {:.1} ms later at seq {}, with the last {} B",
                m.queued_at_close,
                m.unsent_at_close,
                e.hdr.ts_ns.saturating_sub(m.close_ns) as f64 / 1e6,
                e.seq,
                e.send.unsent.saturating_sub(1)
            ));
        }
        if let Some(e) = fin_in {
            self.story.push(format!(
                "the server's kernel received the FIN after {} data bytes; the server read {} B",
                e.seq, m.server_read_bytes
            ));
        }
        if let Some(e) = fin_acked {
            self.story.push(format!(
                "the server's ACK of the FIN reached the client {:.1} ms after the close (FIN_WAIT1 -> FIN_WAIT2, {} B left in its send queue): only now is delivery proved",
                e.hdr.ts_ns.saturating_sub(m.close_ns) as f64 / 1e6,
                e.send.send_q
            ));
        }
        self.checks.extend([
            check(
                "close_kept_unsent",
                "client SIOCOUTQ at close == traced send queue entering FIN_WAIT1",
                m.queued_at_close,
                closing.map_or(0, |e| u64::from(e.send.send_q)),
            ),
            check(
                "every_byte_arrived",
                "bytes the server read after the close == bytes the client's writes accepted",
                m.server_read_bytes,
                accepted,
            ),
            check(
                "fin_after_last_byte",
                "traced FIN's seq == stream offset after the client's last write",
                fin_out.map_or(0, |e| e.seq),
                t.seq_end,
            ),
            check(
                "peer_got_data_before_fin",
                "data bytes before the FIN the server received == bytes accepted",
                fin_in.map_or(0, |e| e.seq),
                accepted,
            ),
            Check {
                name: "fin_acked_last",
                what: "client's send queue when its FIN was acked (FIN_WAIT2), after the FIN left",
                left: fin_acked.map_or(u64::MAX, |e| u64::from(e.send.send_q)),
                right: 0,
                pass: matches!((fin_out, fin_acked), (Some(o), Some(a))
                    if a.send.send_q == 0 && a.hdr.ts_ns >= o.hdr.ts_ns),
            },
        ]);
    }
}
