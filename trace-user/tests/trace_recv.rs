//! `sockbuf trace` on the receive side and the connection's end, with traffic the tests make
//! themselves and the application's own counts as the reference.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, UdpSocket},
    os::fd::AsRawFd,
    thread,
    time::Duration,
};

use common::*;

/// Every `recv` event of socket `ino`: (bytes copied, receive queue left, bytes received).
fn recvs(out: &[serde_json::Value], ino: u64) -> Vec<(u64, u64, u64)> {
    events(out, "recv", ino)
        .iter()
        .map(|e| (u(&e["copied"]), u(&e["recv_q"]), u(&e["received"])))
        .collect()
}

#[test]
fn receive_calls_add_up_to_the_bytes_sent() {
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let (mut client, server) = tcp_pair();
    let sizes = [1usize, 100, 5000, 70_000, 3];
    let total: usize = sizes.iter().sum();
    // The server echoes with a 4 KiB buffer and keeps each read's return.
    let echo = {
        let mut server = server.try_clone().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut reads = Vec::new();
            loop {
                let n = server.read(&mut buf).unwrap();
                reads.push(n as u64);
                if n == 0 {
                    server.shutdown(Shutdown::Write).unwrap();
                    return reads;
                }
                server.write_all(&buf[..n]).unwrap();
            }
        })
    };
    for s in sizes {
        client.write_all(&vec![7u8; s]).unwrap();
    }
    client.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        let n = client.read(&mut buf).unwrap();
        back.push(n as u64);
        if n == 0 {
            break;
        }
    }
    let server_reads = echo.join().unwrap();
    // Two threads: the kernel may skip a program run that no standby copy took (counted as
    // missed); then every event that is there must still be one of the reads, and the
    // skipped runs cover the rest.
    let (out, missed) = trace.stop_counting_missed();

    for (sock, app) in [(ino(&server), &server_reads), (ino(&client), &back)] {
        let traced = recvs(&out, sock);
        let copied: Vec<u64> = traced.iter().map(|r| r.0).collect();
        if missed > 0 {
            assert!(copied.len() <= app.len() && copied.len() + missed as usize >= app.len());
            let mut left = app.clone();
            for c in &copied {
                let i = left.iter().position(|a| a == c);
                left.remove(
                    i.unwrap_or_else(|| panic!("a traced read of {c} B the app never made")),
                );
            }
            continue;
        }
        assert_eq!(
            &copied, app,
            "socket {sock}: one event per read, same bytes"
        );
        assert_eq!(copied.iter().sum::<u64>(), total as u64);
        // After each read the kernel's own bookkeeping agrees with what was read so far:
        // bytes received - receive queue == bytes read. The FIN takes one sequence number:
        // the read that drains the last data may consume it too, the end-of-file read must.
        let mut read = 0;
        for (n, recv_q, received) in traced {
            read += n;
            let consumed = received - recv_q;
            let ok = if read < total as u64 {
                consumed == read
            } else if n == 0 {
                consumed == read + 1
            } else {
                consumed == read || consumed == read + 1
            };
            assert!(
                ok,
                "socket {sock}: read {read}, received {received}, recv_q {recv_q}"
            );
        }
    }
}

#[test]
fn close_with_unread_data_shows_the_drop_and_the_reset() {
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let (mut client, server) = tcp_pair();
    client.write_all(&[1u8; 3000]).unwrap();
    wait_until(Duration::from_secs(5), "data at the server", || {
        inq(&server) == 3000
    });
    let (c, s) = (ino(&client), ino(&server));
    drop(server);
    let err = loop {
        match client.write(&[2u8; 10]) {
            // Before the reset arrives the write would still be accepted.
            Ok(n) => {
                assert_eq!(n, 10);
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET), "{err}");
    let out = trace.stop();

    let state = events(&out, "state", s);
    let close = state
        .iter()
        .find(|e| e["state"] == "CLOSE")
        .expect("the server's close");
    assert_eq!(close["old_state"], "ESTABLISHED");
    assert_eq!(u(&close["recv_q"]), 3000, "unread bytes thrown away");
    assert_eq!(events(&out, "rst_out", s).len(), 1);
    assert_eq!(events(&out, "rst_in", c).len(), 1);
    let failed = events(&out, "send", c)
        .into_iter()
        .filter(|e| e["error"] == "ECONNRESET")
        .count();
    assert_eq!(failed, 1, "the write that failed");
}

#[test]
fn udp_sendto_with_msg_more_is_corked_then_pushed() {
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sin = sockaddr_in(rx.local_addr().unwrap());
    // sendto(2) on an unconnected socket: the flags come from the syscall itself.
    for (len, flags) in [(300usize, libc::MSG_MORE), (200, libc::MSG_MORE), (100, 0)] {
        let buf = vec![3u8; len];
        let n = unsafe {
            libc::sendto(
                tx.as_raw_fd(),
                buf.as_ptr().cast(),
                len,
                flags,
                (&raw const sin).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert_eq!(n, len as isize, "{}", std::io::Error::last_os_error());
    }
    rx.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2000];
    let (n, _) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(n, 600);
    let again = rx.recv_from(&mut buf).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::WouldBlock);
    let out = trace.stop();

    let sends = events(&out, "udp_send", ino(&tx));
    let corked: Vec<u64> = sends.iter().map(|e| u(&e["corked"])).collect();
    assert_eq!(corked, [300, 500, 0]);
    let more: Vec<bool> = sends
        .iter()
        .map(|e| {
            e["msg_flags"]
                .as_array()
                .unwrap()
                .contains(&"MSG_MORE".into())
        })
        .collect();
    assert_eq!(more, [true, true, false]);
    let outs = events(&out, "udp_out", ino(&tx));
    assert_eq!(outs.len(), 1);
    assert_eq!(u(&outs[0]["bytes"]), 600);
    let got: Vec<u64> = events(&out, "recv", ino(&rx))
        .iter()
        .map(|e| u(&e["copied"]))
        .collect();
    assert_eq!(got, [600, 0], "one datagram, then EAGAIN");
}

/// A UDP socket's addresses as they are at each event: an unconnected `sendto()` names its
/// destination (which `--port` matches), and a socket met before `connect()` shows its peer
/// after it (iperf3's UDP server receives first, then connects).
#[test]
fn udp_addresses_follow_connect_and_the_sendto_destination() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let trace = Trace::start(&["--port", &port.to_string()]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx_port = tx.local_addr().unwrap().port();
    // Unconnected: only the destination names the filtered port.
    for _ in 0..3 {
        assert_eq!(
            tx.send_to(&[1u8; 100], rx.local_addr().unwrap()).unwrap(),
            100
        );
    }
    let mut buf = [0u8; 200];
    for _ in 0..3 {
        assert_eq!(rx.recv_from(&mut buf).unwrap().0, 100);
    }
    // Met unconnected (its receives), then connected to the sender.
    rx.connect(tx.local_addr().unwrap()).unwrap();
    for _ in 0..2 {
        assert_eq!(rx.send(&[2u8; 50]).unwrap(), 50);
    }
    for _ in 0..2 {
        assert_eq!(tx.recv_from(&mut buf).unwrap().0, 50);
    }
    let out = trace.stop();

    let sent = events(&out, "udp_send", ino(&tx));
    assert_eq!(
        sent.len(),
        3,
        "each sendto to the filtered port: {}",
        end(&out)
    );
    for e in &sent {
        assert_eq!(u(&e["rport"]), u64::from(port), "the destination: {e}");
        assert_eq!(e["daddr"], "127.0.0.1", "{e}");
        assert_eq!(u(&e["lport"]), u64::from(tx_port), "{e}");
    }
    let outs = events(&out, "udp_out", ino(&tx));
    assert_eq!(outs.len(), 3, "each datagram leaving");
    assert!(outs.iter().all(|e| u(&e["rport"]) == u64::from(port)));
    let received = events(&out, "recv", ino(&rx));
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|e| u(&e["rport"]) == 0), "unconnected");
    let replies = events(&out, "udp_send", ino(&rx));
    assert_eq!(replies.len(), 2);
    for e in &replies {
        assert_eq!(u(&e["rport"]), u64::from(tx_port), "connected since: {e}");
        assert_eq!(e["daddr"], "127.0.0.1", "{e}");
    }
}
