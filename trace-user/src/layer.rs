//! Sockets with a layer between the application and TCP (kTLS): trace-ebpf's `layer` tells
//! them by their `sendmsg`, which is not `tcp_sendmsg`, whose address is found here.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
};

/// Where the kernel has TLS (the `tls` module loaded, or built in), `tcp_sendmsg`'s address:
/// `None` when it has not (no socket can have the layer then) or the address is hidden.
pub fn tcp_sendmsg() -> Option<u64> {
    // Each network namespace gets this file when TLS initializes.
    if !Path::new("/proc/net/tls_stat").exists() {
        log::debug!(
            "kTLS: the kernel has no TLS loaded; sockets made kTLS later are not told apart"
        );
        return None;
    }
    let address = kernel_symbol("tcp_sendmsg");
    if address.is_none() {
        log::warn!(
            "kTLS: tcp_sendmsg's address is hidden (kptr_restrict): kTLS sends are not traced"
        );
    }
    address
}

/// A function's address from /proc/kallsyms (0s when kptr_restrict hides them: `None`).
fn kernel_symbol(name: &str) -> Option<u64> {
    let file = File::open("/proc/kallsyms").ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let (address, kind, symbol) = (words.next()?, words.next()?, words.next()?);
            (symbol == name && matches!(kind, "T" | "t"))
                .then(|| u64::from_str_radix(address, 16).ok())
                .flatten()
                .filter(|&a| a != 0)
        })
}
