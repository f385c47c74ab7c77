//! The Rust twin of stuck_writer.c, for the `--stacks` tests: a writer that blocks on a full
//! send buffer (`push_until_full`) and one that loops on EAGAIN (`retry_on_eagain`), each to
//! a loopback connection whose reader sleeps first. Prints the time it spent inside the
//! blocking writes and the EAGAINs it got. Built by trace-user's build script with frame
//! pointers and debug info, without dependencies (hence the hand-declared setsockopt).

use std::{
    io::{ErrorKind, Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    thread,
    time::{Duration, Instant},
};

unsafe extern "C" {
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const i32, len: u32) -> i32;
}

const SOL_SOCKET: i32 = 1;
const SO_SNDBUF: i32 = 7;
const SO_RCVBUF: i32 = 8;

fn small_buffer(fd: i32, which: i32) {
    let small: i32 = 64 * 1024;
    // SAFETY: a valid socket and option value.
    assert_eq!(unsafe { setsockopt(fd, SOL_SOCKET, which, &small, 4) }, 0);
}

/// A connected loopback pair with small buffers, so that the writer fills them fast; the
/// reader reads nothing for `hold`, then everything.
fn pair(hold: Duration) -> (TcpStream, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    small_buffer(l.as_raw_fd(), SO_RCVBUF);
    let addr = l.local_addr().unwrap();
    let reader = thread::spawn(move || {
        let (mut r, _) = l.accept().unwrap();
        thread::sleep(hold);
        let mut buf = vec![0u8; 65536];
        while r.read(&mut buf).unwrap_or(0) > 0 {}
    });
    // The send buffer is set before connecting, as the C twin does.
    let w = TcpStream::connect(addr).unwrap();
    small_buffer(w.as_raw_fd(), SO_SNDBUF);
    (w, reader)
}

#[inline(never)]
fn push_until_full(w: &mut TcpStream, mut total: usize) -> Duration {
    let buf = vec![0u8; 65536];
    let mut in_write = Duration::ZERO;
    while total > 0 {
        let t = Instant::now();
        let n = w.write(&buf[..total.min(buf.len())]).unwrap();
        in_write += t.elapsed();
        total -= n;
    }
    in_write
}

#[inline(never)]
fn retry_on_eagain(w: &mut TcpStream, mut total: usize) -> u64 {
    let buf = vec![0u8; 65536];
    let mut eagains = 0;
    w.set_nonblocking(true).unwrap();
    while total > 0 {
        match w.write(&buf[..total.min(buf.len())]) {
            Ok(n) => total -= n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                eagains += 1;
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    eagains
}

fn main() {
    // The test starts tracing first, then says go (a line on stdin).
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let hold_ms: u64 = std::env::args()
        .nth(1)
        .map_or(1000, |a| a.parse().unwrap());
    let (mut w, reader) = pair(Duration::from_millis(hold_ms));
    // Little more than the buffers hold (see the C twin).
    let ns = push_until_full(&mut w, 1 << 20).as_nanos();
    println!("push_until_full_ns {ns}");
    drop(w);
    reader.join().unwrap();
    let (mut w, reader) = pair(Duration::from_millis(hold_ms / 2));
    println!("retry_on_eagain_eagains {}", retry_on_eagain(&mut w, 1 << 20));
    drop(w);
    reader.join().unwrap();
}
