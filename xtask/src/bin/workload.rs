//! The benchmark's workload: N writes of S bytes over loopback TCP (TCP_NODELAY) on C
//! connections, each drained by a reader thread. Prints one JSON line with its timings.
//!
//! Its threads are named `sbwork` so tracers can select them by comm.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::Instant,
};

use clap::Parser;
use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};

#[derive(Parser)]
struct Args {
    /// Writes per connection.
    #[arg(short = 'n', long, default_value_t = 200_000)]
    writes: u64,
    /// Bytes per write.
    #[arg(short, long, default_value_t = 64)]
    size: usize,
    /// Connections, each with its own writer and reader thread.
    #[arg(short, long, default_value_t = 1)]
    conns: usize,
    /// Runs every thread on this CPU (default: wherever the scheduler puts them).
    #[arg(long)]
    cpu: Option<usize>,
}

fn name_thread(name: &str) {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// CPU time (user + system) this process used, kernel work on its behalf included.
fn cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

fn main() {
    let args = Args::parse();
    name_thread("sbwork");
    if let Some(cpu) = args.cpu {
        // Threads inherit it: set before any is spawned.
        let mut set = CpuSet::new();
        set.set(cpu).expect("--cpu: no such CPU");
        sched_setaffinity(Pid::from_raw(0), &set).expect("--cpu: sched_setaffinity");
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let total = args.writes * args.size as u64;
    let pairs: Vec<(TcpStream, TcpStream)> = (0..args.conns)
        .map(|_| {
            let c = TcpStream::connect(addr).expect("connect");
            c.set_nodelay(true).expect("nodelay");
            let (s, _) = listener.accept().expect("accept");
            (c, s)
        })
        .collect();
    let start = Instant::now();
    let handles: Vec<_> = pairs
        .into_iter()
        .map(|(mut c, mut s)| {
            let reader = thread::spawn(move || {
                name_thread("sbwork-rd");
                let mut buf = vec![0u8; 1 << 16];
                let mut n = 0u64;
                while n < total {
                    n += s.read(&mut buf).expect("read") as u64;
                }
            });
            let size = args.size;
            let writes = args.writes;
            let writer = thread::spawn(move || {
                name_thread("sbwork");
                let buf = vec![7u8; size];
                for _ in 0..writes {
                    c.write_all(&buf).expect("write");
                }
            });
            (writer, reader)
        })
        .collect();
    for (w, r) in handles {
        w.join().expect("writer");
        r.join().expect("reader");
    }
    let elapsed = start.elapsed();
    let writes = args.writes * args.conns as u64;
    println!(
        "{{\"writes\":{writes},\"size\":{},\"conns\":{},\"elapsed_ns\":{},\"ns_per_write\":{:.1},\"writes_per_sec\":{:.0},\"cpu_ns\":{}}}",
        args.size,
        args.conns,
        elapsed.as_nanos(),
        elapsed.as_nanos() as f64 / writes as f64,
        writes as f64 / elapsed.as_secs_f64(),
        cpu_ns()
    );
}
