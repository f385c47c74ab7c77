//! TCP sockets with a layer between the application and TCP: kTLS (`TCP_ULP` "tls" with
//! `TLS_TX`) replaces the socket's `sendmsg` with its own, which encrypts the application's
//! bytes into records and hands them to TCP from inside. `tcp_sendmsg`, where the function
//! backends see a call, never runs; TCP's copy-loop tracepoint fires for the records, not for
//! the application's call. So such a call opens at the syscall's entry and ends at the socket
//! layer's return (`sock_send_length`), as in the syscall form of the tracepoint backend;
//! the `layer_` programs take only these sockets, for backends that see other calls elsewhere.

use crate::kernel::{Access, Fault, Sock};

/// `tcp_sendmsg`'s address, set by the loader (0: unknown, and no socket counts as layered).
#[unsafe(no_mangle)]
static TCP_SENDMSG: u64 = 0;

/// Whether TCP socket `sock` has a layer above TCP.
#[inline(always)]
pub fn layered<A: Access>(sock: &Sock<A>) -> Result<bool, Fault> {
    let tcp_sendmsg = unsafe { core::ptr::read_volatile(&raw const TCP_SENDMSG) };
    Ok(tcp_sendmsg != 0 && sock.sendmsg_fn()? != tcp_sendmsg)
}
