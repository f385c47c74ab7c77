//! IPv6: TCP and UDP over `::1`, and an IPv4 client accepted by a dual-stack IPv6 listener
//! (the server's socket is IPv6, its addresses v4-mapped, `::ffff:127.0.0.1`, as `ss` shows
//! them). Each send is traced with its family, addresses and ports as the sockets report
//! them, and acked; the port filter takes IPv6 sockets like others.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
};

use common::*;
use serde_json::Value;

/// Checks an event's family and addresses against `local` → `remote`.
fn check_addrs(e: &Value, local: SocketAddr, remote: SocketAddr) {
    assert_eq!(e["family"], "ipv6", "{e}");
    assert_eq!(e["saddr"], local.ip().to_string(), "{e}");
    assert_eq!(e["daddr"], remote.ip().to_string(), "{e}");
    assert_eq!(u(&e["lport"]), u64::from(local.port()), "{e}");
    assert_eq!(u(&e["rport"]), u64::from(remote.port()), "{e}");
}

#[test]
fn tcp_over_ipv6_and_v4_mapped_addresses() {
    let l6 = TcpListener::bind("[::1]:0").unwrap();
    let mut c6 = TcpStream::connect(l6.local_addr().unwrap()).unwrap();
    let (mut s6, _) = l6.accept().unwrap();
    // Dual-stack: an IPv4 client, accepted on an IPv6 socket.
    let dual = TcpListener::bind("[::]:0").unwrap();
    let port = dual.local_addr().unwrap().port();
    let mut c4 = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut mapped, peer) = dual.accept().unwrap();
    assert_eq!(peer.ip().to_string(), "::ffff:127.0.0.1");
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    for _ in 0..10 {
        c6.write_all(&[6u8; 1000]).unwrap();
    }
    let mut buf = vec![0u8; 10_000];
    s6.read_exact(&mut buf).unwrap();
    mapped.write_all(&[4u8; 5000]).unwrap();
    c4.read_exact(&mut buf[..5000]).unwrap();
    let out = trace.stop();

    let sends = events(&out, "send", ino(&c6));
    assert_eq!(sends.len(), 10, "{sends:?}");
    for e in &sends {
        assert_eq!(u(&e["copied"]), 1000, "{e}");
        check_addrs(e, c6.local_addr().unwrap(), c6.peer_addr().unwrap());
    }
    assert_eq!(events(&out, "ack", ino(&c6)).len(), 10);
    let sends = events(&out, "send", ino(&mapped));
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(u(&sends[0]["copied"]), 5000);
    check_addrs(
        sends[0],
        mapped.local_addr().unwrap(),
        mapped.peer_addr().unwrap(),
    );
    assert_eq!(events(&out, "ack", ino(&mapped)).len(), 1);
    let recvs = events(&out, "recv", ino(&s6));
    let read: u64 = recvs.iter().map(|e| u(&e["copied"])).sum();
    assert_eq!(read, 10_000, "the IPv6 reader's bytes");
}

#[test]
fn port_filter_takes_ipv6_and_v4_mapped_sockets() {
    let dual = TcpListener::bind("[::]:0").unwrap();
    let port = dual.local_addr().unwrap().port();
    let trace = Trace::start(&["--port", &port.to_string()]);
    let mut c4 = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut mapped, _) = dual.accept().unwrap();
    let mut c6 = TcpStream::connect(("::1", port)).unwrap();
    let (mut s6, _) = dual.accept().unwrap();
    mapped.write_all(&[1u8; 3000]).unwrap();
    s6.write_all(&[1u8; 2000]).unwrap();
    let mut buf = [0u8; 3000];
    c4.read_exact(&mut buf).unwrap();
    c6.read_exact(&mut buf[..2000]).unwrap();
    let out = trace.stop();
    for (s, bytes) in [(&mapped, 3000), (&s6, 2000)] {
        // Met at its handshake, before accept() gave it an inode: its sock_id is not the
        // inode, its `ino` is.
        let sends: Vec<&Value> = out
            .iter()
            .filter(|e| e["kind"] == "send" && u(&e["ino"]) == ino(s))
            .collect();
        let copied: u64 = sends.iter().map(|e| u(&e["copied"])).sum();
        assert_eq!(copied, bytes, "{sends:?}");
    }
}

#[test]
fn udp_over_ipv6_connected_and_not() {
    let rx = UdpSocket::bind("[::1]:0").unwrap();
    let tx = UdpSocket::bind("[::1]:0").unwrap();
    let to = rx.local_addr().unwrap();
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    for k in 1..=3 {
        tx.send_to(&vec![b'u'; 100 * k], to).unwrap();
    }
    tx.connect(to).unwrap();
    for k in 4..=5 {
        tx.send(&vec![b'u'; 100 * k]).unwrap();
    }
    let mut buf = [0u8; 1000];
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(rx.recv(&mut buf).unwrap() as u64);
    }
    let out = trace.stop();
    let sends = events(&out, "udp_send", ino(&tx));
    let bytes: Vec<u64> = sends.iter().map(|e| u(&e["bytes"])).collect();
    assert_eq!(bytes, [100, 200, 300, 400, 500], "{sends:?}");
    for e in &sends {
        check_addrs(e, tx.local_addr().unwrap(), to);
    }
    let recvs = events(&out, "recv", ino(&rx));
    let read: Vec<u64> = recvs.iter().map(|e| u(&e["copied"])).collect();
    assert_eq!(read, got);
}
