//! kTLS: a socket whose sends the kernel encrypts (`TCP_ULP` "tls" and `TLS_TX`, AES-GCM-128
//! with a fixed key: no handshake is needed to make the kernel build records). Each write is
//! traced with the bytes the application got back and the bytes that entered TCP — records
//! with their 29 bytes of header, nonce and tag — against what the peer received; the
//! writes are acked, those held back by `MSG_MORE` with the record that carried them; a
//! writer blocked behind a peer that does not read is seen asleep.
//!
//! Needs a kernel with TLS (the host's is built without it: this runs in the kernel matrix,
//! where every guest loads `tls`).

mod common;

use std::{io::Read, net::TcpStream, os::fd::AsRawFd, thread, time::Duration};

use common::*;

const SOL_TLS: i32 = 282;
const TLS_TX: i32 = 1;
const TCP_ULP: i32 = 31;
/// Plaintext per record, and what each record adds: 5 bytes of header, 8 of explicit nonce,
/// 16 of tag (TLS 1.2, AES-GCM-128).
const RECORD: u64 = 16_384;
const OVERHEAD: u64 = 29;

/// `struct tls12_crypto_info_aes_gcm_128`.
#[repr(C)]
struct CryptoInfo {
    version: u16,
    cipher_type: u16,
    iv: [u8; 8],
    key: [u8; 16],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// Makes `s` a kTLS socket for sending.
fn ktls_tx(s: &TcpStream) {
    let fd = s.as_raw_fd();
    let ulp = b"tls";
    let r = unsafe { libc::setsockopt(fd, libc::SOL_TCP, TCP_ULP, ulp.as_ptr().cast(), 3) };
    assert_eq!(
        r,
        0,
        "setsockopt(TCP_ULP, \"tls\"): {} (a kernel with TLS is needed: CONFIG_TLS)",
        std::io::Error::last_os_error()
    );
    let info = CryptoInfo {
        version: 0x0303, // TLS 1.2
        cipher_type: 51, // TLS_CIPHER_AES_GCM_128
        iv: [1; 8],
        key: [2; 16],
        salt: [3; 4],
        rec_seq: [0; 8],
    };
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_TLS,
            TLS_TX,
            (&raw const info).cast(),
            std::mem::size_of::<CryptoInfo>() as u32,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt(TLS_TX): {}",
        std::io::Error::last_os_error()
    );
}

fn send(s: &TcpStream, len: usize, flags: i32) -> u64 {
    let buf = vec![b'k'; len];
    let n = unsafe { libc::send(s.as_raw_fd(), buf.as_ptr().cast(), len, flags) };
    assert_eq!(n, len as isize, "{}", std::io::Error::last_os_error());
    len as u64
}

/// Reads from `s` until `want` bytes came (or 10 s of nothing more).
fn read_all(s: &mut TcpStream, want: u64) -> u64 {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    while got < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    got
}

/// Whether this kernel lets sockbuf see kTLS sends: it needs the `sock_send_length`
/// tracepoint (6.1 has none). Asked while sockbuf runs: it mounts tracefs if need be.
fn ktls_traced() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| std::path::Path::new(&format!("{t}/events/sock/sock_send_length")).exists())
}

fn records(len: u64) -> u64 {
    len.div_ceil(RECORD)
}

#[test]
fn ktls_writes_show_app_bytes_and_record_bytes_into_tcp() {
    let (client, mut server) = tcp_pair();
    ktls_tx(&client);
    let ino = ino(&client);
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    // (bytes, MSG_MORE): the 500 wait in an open record that the 700 then closes.
    let writes: [(u64, bool); 5] = [
        (1_000, false),
        (40_000, false),
        (16_384, false),
        (500, true),
        (700, false),
    ];
    let mut app = 0;
    for (len, more) in writes {
        app += send(&client, len as usize, if more { libc::MSG_MORE } else { 0 });
    }
    let expected_wire: u64 = app + OVERHEAD * (records(1_000) + records(40_000) + 1 + 1);
    let wire = read_all(&mut server, expected_wire);
    assert_eq!(wire, expected_wire, "the peer received the records");

    // A blocking writer behind a peer that does not read for a while.
    const FILL: u64 = 4 << 20;
    let writer = {
        let client = client.try_clone().unwrap();
        thread::spawn(move || {
            let mut sent = 0;
            while sent < FILL {
                sent += send(&client, 1 << 16, 0);
            }
            sent
        })
    };
    thread::sleep(Duration::from_millis(500));
    let fill_wire = read_all(&mut server, FILL + OVERHEAD * records(FILL));
    assert_eq!(writer.join().unwrap(), FILL);
    assert_eq!(fill_wire, FILL + OVERHEAD * records(FILL));

    let seen = ktls_traced();
    let out = trace.stop();
    let sends = events(&out, "send", ino);
    if !seen {
        // docs/limits.md: the call's end is seen at sock_send_length only.
        assert!(sends.is_empty(), "{sends:?}");
        return;
    }
    let small = &sends[..writes.len().min(sends.len())];
    let got: Vec<(u64, Option<u64>)> = small
        .iter()
        .map(|e| (u(&e["copied"]), e["tcp_bytes"].as_u64()))
        .collect();
    assert_eq!(
        got,
        [
            (1_000, Some(1_000 + OVERHEAD)),
            (40_000, Some(40_000 + 3 * OVERHEAD)),
            (16_384, Some(16_384 + OVERHEAD)),
            (500, Some(0)),
            (700, Some(1_200 + OVERHEAD)),
        ],
        "each write's bytes, and the records it put into TCP: {small:?}"
    );
    for e in &sends {
        assert_eq!(e["layered"], true, "{e}");
        assert_eq!(e["syscall"], "sendto", "{e}");
    }
    let copied: u64 = sends.iter().map(|e| u(&e["copied"])).sum();
    let into_tcp: u64 = sends.iter().map(|e| u(&e["tcp_bytes"])).sum();
    assert_eq!(copied, app + FILL, "the application's bytes");
    assert_eq!(into_tcp, wire + fill_wire, "the bytes the peer received");
    assert!(
        !events(&out, "block", ino).is_empty(),
        "the writer slept on the full send buffer"
    );
    let end = end(&out);
    assert_eq!(u(&end["unacked"]), 0, "every write acked: {end}");
    let acks = events(&out, "ack", ino);
    assert_eq!(acks.len(), sends.len(), "an ack per write");
    let first = sends.iter().map(|e| u(&e["seq_start"])).min().unwrap();
    let last = acks.iter().map(|a| u(&a["seq_end"])).max().unwrap();
    assert_eq!(
        last - first,
        wire + fill_wire,
        "the ACKs cover every record"
    );
}
