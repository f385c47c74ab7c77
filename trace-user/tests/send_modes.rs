//! Send modes beyond a plain write: `MSG_ZEROCOPY` (the send, and its completion read from
//! the error queue) and TCP Fast Open (`sendto(MSG_FASTOPEN)` on a socket not yet
//! connected: the data rides in the SYN). Each is traced with its flags and bytes, and its
//! write acked, as the program's own calls and TCP_INFO say.

mod common;

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd},
};

use common::*;

/// A sysctl set for the test and put back when dropped.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Self {
        let old = std::fs::read_to_string(path).expect("read sysctl");
        std::fs::write(path, value).expect("write sysctl");
        Self { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.old.trim());
    }
}

#[test]
fn zerocopy_send_and_its_completion_are_traced() {
    const LEN: usize = 10_000;
    const SO_ZEROCOPY: i32 = 60;
    let (client, mut server) = tcp_pair();
    set_sockopt_int(&client, libc::SOL_SOCKET, SO_ZEROCOPY, 1);
    let ino = ino(&client);
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let buf = vec![b'z'; LEN];
    let sent = unsafe {
        libc::send(
            client.as_raw_fd(),
            buf.as_ptr().cast(),
            LEN,
            libc::MSG_ZEROCOPY,
        )
    };
    assert_eq!(sent, LEN as isize, "{}", std::io::Error::last_os_error());
    let mut got = vec![0u8; LEN];
    server.read_exact(&mut got).unwrap();
    // The completion: a message on the error queue (POLLERR), no data.
    let mut pfd = libc::pollfd {
        fd: client.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1, "no completion");
    let mut control = [0u8; 128];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    let r = unsafe { libc::recvmsg(client.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) };
    assert!(
        r >= 0,
        "recvmsg(MSG_ERRQUEUE): {}",
        std::io::Error::last_os_error()
    );
    assert!(msg.msg_controllen > 0, "a completion notification");
    let out = trace.stop();
    let sends = events(&out, "send", ino);
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(u(&sends[0]["copied"]), LEN as u64);
    assert!(
        sends[0]["msg_flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "MSG_ZEROCOPY"),
        "{}",
        sends[0]
    );
    let completions: Vec<_> = events(&out, "recv", ino)
        .into_iter()
        .filter(|e| {
            e["msg_flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "MSG_ERRQUEUE")
        })
        .collect();
    assert_eq!(completions.len(), 1, "the completion read: {completions:?}");
    assert_eq!(completions[0]["ret"].as_i64(), Some(r as i64));
    assert_eq!(events(&out, "ack", ino).len(), 1, "the write acked");
}

#[test]
fn fast_open_data_in_the_syn_is_traced_and_acked() {
    // Client and server, no cookie needed: the first connection carries data in its SYN.
    let _tfo = Sysctl::set("/proc/sys/net/ipv4/tcp_fastopen", "519"); // 0x207
    const LEN: usize = 1000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    set_sockopt_int(&listener, libc::IPPROTO_TCP, libc::TCP_FASTOPEN, 16);
    let addr = sockaddr_in(listener.local_addr().unwrap());
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    let client = unsafe { TcpStream::from_raw_fd(fd) };
    let ino = ino(&client);
    let trace = Trace::start(&["-p", &std::process::id().to_string()]);
    let buf = vec![b'f'; LEN];
    let sent = unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            LEN,
            libc::MSG_FASTOPEN,
            (&raw const addr).cast(),
            std::mem::size_of_val(&addr) as u32,
        )
    };
    assert_eq!(sent, LEN as isize, "{}", std::io::Error::last_os_error());
    let (mut server, _) = listener.accept().unwrap();
    let mut got = vec![0u8; LEN];
    server.read_exact(&mut got).unwrap();
    const TCPI_OPT_SYN_DATA: u8 = 0x20;
    assert_ne!(
        tcp_info(&client).tcpi_options & TCPI_OPT_SYN_DATA,
        0,
        "the kernel sent the data in the SYN"
    );
    let out = trace.stop();
    let sends = events(&out, "send", ino);
    assert_eq!(sends.len(), 1, "{sends:?}");
    let s = sends[0];
    assert_eq!(u(&s["copied"]), LEN as u64, "{s}");
    assert!(
        s["msg_flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "MSG_FASTOPEN"),
        "{s}"
    );
    assert_eq!(
        (u(&s["seq_start"]), u(&s["seq_end"])),
        (1, 1 + LEN as u64),
        "{s}"
    );
    let port = listener.local_addr().unwrap().port();
    assert_eq!(u(&s["rport"]), u64::from(port), "connected on the way: {s}");
    let acks = events(&out, "ack", ino);
    assert_eq!(
        acks.len(),
        1,
        "the SYN's data acked by the SYN-ACK: {acks:?}"
    );
    assert_eq!(u(&end(&out)["unacked"]), 0);
}
