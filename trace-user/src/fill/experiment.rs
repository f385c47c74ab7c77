//! The experiment itself, on its own thread inside the experiment's namespace: a server that
//! accepts and does not read, a client that writes until its send buffer is full.

use std::{
    io::{self, ErrorKind, Read},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Protocol, Socket, Type};

use super::then::{self, Then, ThenMeasured};
use crate::{
    cli::FillMode,
    format::monotonic_ns,
    netns::{self, NetNs, TcpSysctls},
    sockio as sock,
};

/// How long an EAGAIN must persist (the delayed ACKs have come back by then) to end the fill.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// How long to wait for the queues to settle (ACKs in flight) before measuring them.
const SETTLE_LIMIT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct Plan {
    pub mode: FillMode,
    pub chunk: usize,
    pub interval: Duration,
    pub sndbuf: Option<u32>,
    pub rcvbuf: Option<u32>,
    pub ipv6: bool,
    pub tcp_wmem: Option<[u64; 3]>,
    pub tcp_rmem: Option<[u64; 3]>,
    pub read_after: Duration,
    pub hold: Option<Duration>,
    pub then: Option<Then>,
}

/// What happened when a sample was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleKind {
    /// Right after a write call that copied bytes.
    Write,
    /// Right after a write call that failed with EAGAIN.
    Eagain,
    /// While the writer sleeps or the server drains.
    Tick,
}

/// The queues at one moment, from the experiment's own ioctls.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub t_ns: u64,
    pub send_q: u64,
    pub recv_q: u64,
    pub kind: SampleKind,
}

/// A sleep of the writer, as the tracer reported it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Asleep {
    pub start_ns: u64,
    pub left: u64,
}

/// Shared with the trace handler: whether the writer is asleep in the kernel right now.
#[derive(Default)]
pub struct WriterState {
    pub asleep: Mutex<Option<Asleep>>,
}

/// What the experiment measured, independently of the trace.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub sysctls: TcpSysctls,
    pub client_ino: u64,
    pub server_ino: u64,
    pub sndbuf: u64,
    pub rcvbuf: u64,
    /// Bytes the kernel held for the client when measured (blocking: including the part of
    /// the sleeping call already copied).
    pub accepted_bytes: u64,
    /// Every byte the client's calls returned, by the end of the run.
    pub written_bytes: u64,
    pub write_calls: u64,
    pub eagain_count: u64,
    pub client_send_queue: u64,
    pub client_unsent: u64,
    pub server_recv_queue: u64,
    /// Data bytes the server has acknowledged (TCP_INFO bytes_acked, less the SYN).
    pub last_ack_bytes: u64,
    /// Whether the queues settled (send + receive queue == accepted) before measuring.
    pub settled: bool,
    /// Blocking: the sleep measured, and how long the server waited before reading.
    pub asleep: Option<Asleep>,
    pub server_wait_ns: u64,
    pub server_read_bytes: u64,
    pub start_ns: u64,
    pub samples: Vec<Sample>,
    /// What `--then` measured around the close.
    pub then: Option<ThenMeasured>,
}

/// Runs the experiment: binds, reports the port on `port_tx`, waits for `go` (the tracer is
/// attached), connects, fills, measures.
pub fn run(
    plan: Plan,
    ns: &NetNs,
    port_tx: mpsc::Sender<u16>,
    go: mpsc::Receiver<()>,
    asleep_rx: mpsc::Receiver<Asleep>,
    writer: Arc<WriterState>,
) -> anyhow::Result<(Measured, Held)> {
    let tcp_mem = netns::read_tcp_mem()?;
    ns.enter()?;
    if let Some(v) = plan.tcp_wmem {
        netns::write_triple("tcp_wmem", v)?;
    }
    if let Some(v) = plan.tcp_rmem {
        netns::write_triple("tcp_rmem", v)?;
    }
    let mut m = Measured {
        sysctls: TcpSysctls::read(tcp_mem)?,
        ..Default::default()
    };

    let (domain, addr): (_, SocketAddr) = if plan.ipv6 {
        (Domain::IPV6, "[::1]:0".parse()?)
    } else {
        (Domain::IPV4, "127.0.0.1:0".parse()?)
    };
    let listener = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if let Some(r) = plan.rcvbuf {
        // On the listener, so the accepted socket has it from the handshake on.
        listener.set_recv_buffer_size(r as usize)?;
    }
    listener.bind(&addr.into())?;
    listener.listen(1)?;
    let local = listener.local_addr()?;
    port_tx.send(local.as_socket().context("listener address")?.port())?;
    go.recv().context("the tracer did not start")?;

    let client = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if let Some(s) = plan.sndbuf {
        client.set_send_buffer_size(s as usize)?;
    }
    client.connect(&local)?;
    let (server, _) = listener.accept()?;
    m.client_ino = sock::ino(&client)?;
    m.server_ino = sock::ino(&server)?;
    m.start_ns = monotonic_ns();

    match plan.mode {
        FillMode::Nonblocking => {
            fill_nonblocking(&plan, &client, &server, &mut m)?;
            match plan.then {
                Some(Then::CloseUnread) => {
                    let t = then::close_unread(&client, server)?;
                    // The calls after the close are the client's too, for the trace checks.
                    m.write_calls += t.write_calls;
                    m.eagain_count += t.eagains;
                    m.then = Some(t);
                    return Ok((m, Held::new(vec![listener, client])));
                }
                Some(Then::CloseUnsent) => {
                    m.then = Some(then::close_unsent(client, &server)?);
                    return Ok((m, Held::new(vec![listener, server])));
                }
                None => {}
            }
        }
        FillMode::Blocking => fill_blocking(
            &plan,
            client.try_clone()?,
            &server,
            &mut m,
            &asleep_rx,
            &writer,
        )?,
    }
    Ok((m, Held::new(vec![listener, client, server])))
}

/// The experiment's sockets, kept open after the report for `--hold`.
pub struct Held {
    _sockets: Vec<Socket>,
}

impl Held {
    fn new(sockets: Vec<Socket>) -> Self {
        Self { _sockets: sockets }
    }
}

fn sample(client: &Socket, server: &Socket, kind: SampleKind) -> io::Result<Sample> {
    Ok(Sample {
        t_ns: monotonic_ns(),
        send_q: sock::outq(client)?,
        recv_q: sock::inq(server)?,
        kind,
    })
}

/// Keeps a timeline small enough to plot: every EAGAIN, otherwise at most one sample per ms.
fn record(m: &mut Measured, s: Sample) {
    if s.kind == SampleKind::Eagain
        || m.samples
            .last()
            .is_none_or(|p| s.t_ns >= p.t_ns + 1_000_000)
    {
        m.samples.push(s);
    }
}

/// Waits until every accepted byte is counted once: in the client's send queue or the
/// server's receive queue (until the last ACK returns, bytes the server holds count twice).
fn settle(client: &Socket, server: &Socket, accepted: u64) -> io::Result<bool> {
    let t0 = Instant::now();
    loop {
        if sock::outq(client)? + sock::inq(server)? == accepted {
            return Ok(true);
        }
        if t0.elapsed() > SETTLE_LIMIT {
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn measure(client: &Socket, server: &Socket, m: &mut Measured) -> io::Result<()> {
    m.settled = settle(client, server, m.accepted_bytes)?;
    m.client_send_queue = sock::outq(client)?;
    m.client_unsent = sock::outq_unsent(client)?;
    m.server_recv_queue = sock::inq(server)?;
    // bytes_acked counts the SYN too.
    m.last_ack_bytes = sock::tcp_info(client)?.tcpi_bytes_acked.saturating_sub(1);
    m.sndbuf = client.send_buffer_size()? as u64;
    m.rcvbuf = server.recv_buffer_size()? as u64;
    Ok(())
}

fn fill_nonblocking(
    plan: &Plan,
    client: &Socket,
    server: &Socket,
    m: &mut Measured,
) -> anyhow::Result<()> {
    client.set_nonblocking(true)?;
    let buf = vec![0x5a_u8; plan.chunk];
    let mut retried = false;
    loop {
        if m.write_calls > 0 && !plan.interval.is_zero() {
            thread::sleep(plan.interval);
        }
        m.write_calls += 1;
        match client.send(&buf) {
            Ok(n) => {
                m.accepted_bytes += n as u64;
                retried = false;
                let s = sample(client, server, SampleKind::Write)?;
                record(m, s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                m.eagain_count += 1;
                let s = sample(client, server, SampleKind::Eagain)?;
                record(m, s);
                if retried {
                    break;
                }
                retried = true;
                thread::sleep(RETRY_AFTER);
            }
            Err(e) => return Err(e).context("client write"),
        }
    }
    m.written_bytes = m.accepted_bytes;
    measure(client, server, m)?;
    Ok(())
}

/// The blocking experiment's writer: `chunk`-byte writes until told to stop. Out of line, so
/// that `fill --stacks` names it as the function that slept.
#[inline(never)]
fn blocking_writer(
    client: &Socket,
    chunk: usize,
    interval: Duration,
    written: &AtomicU64,
    calls: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<()> {
    let buf = vec![0x5a_u8; chunk];
    while !stop.load(Ordering::Acquire) {
        calls.fetch_add(1, Ordering::AcqRel);
        let n = client.send(&buf)?;
        written.fetch_add(n as u64, Ordering::AcqRel);
        if !interval.is_zero() {
            thread::sleep(interval);
        }
    }
    Ok(())
}

fn fill_blocking(
    plan: &Plan,
    client: Socket,
    server: &Socket,
    m: &mut Measured,
    asleep_rx: &mpsc::Receiver<Asleep>,
    state: &WriterState,
) -> anyhow::Result<()> {
    let written = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, calls, stop, chunk, interval) = (
            written.clone(),
            calls.clone(),
            stop.clone(),
            plan.chunk,
            plan.interval,
        );
        let client = client.try_clone()?;
        thread::Builder::new()
            .name("fill-writer".into())
            .spawn(move || blocking_writer(&client, chunk, interval, &written, &calls, &stop))?
    };
    // The tracer says when the writer falls asleep; give delayed ACKs `read_after` to wake it
    // for a last copy, and measure once it is asleep again.
    let mut asleep = None;
    while asleep.is_none() {
        asleep_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the writer never fell asleep")?;
        let deadline = Instant::now() + plan.read_after;
        while Instant::now() < deadline {
            record(m, sample(&client, server, SampleKind::Tick)?);
            thread::sleep(Duration::from_millis(5));
        }
        while asleep_rx.try_recv().is_ok() {}
        asleep = *state.asleep.lock().expect("lock");
    }
    let asleep = asleep.expect("loop ends asleep");
    let partial = (plan.chunk as u64).saturating_sub(asleep.left);
    m.accepted_bytes = written.load(Ordering::Acquire) + partial;
    measure(&client, server, m)?;
    m.asleep = Some(asleep);

    // Now the server reads everything; the writer wakes, finishes its call, and stops.
    stop.store(true, Ordering::Release);
    let read_start = monotonic_ns();
    m.server_wait_ns = read_start.saturating_sub(asleep.start_ns);
    server.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut srv = server;
    loop {
        match srv.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => m.server_read_bytes += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e).context("server read"),
        }
        if writer.is_finished() && m.server_read_bytes >= written.load(Ordering::Acquire) {
            break;
        }
        record(m, sample(&client, server, SampleKind::Tick)?);
    }
    match writer.join() {
        Ok(r) => r.context("client write")?,
        Err(_) => bail!("the writer thread panicked"),
    }
    m.written_bytes = written.load(Ordering::Acquire);
    m.write_calls = calls.load(Ordering::Acquire);
    Ok(())
}
