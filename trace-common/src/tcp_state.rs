//! TCP states by number, as `include/net/tcp_states.h` numbers them: what a socket's
//! `skc_state` holds and `inet_sock_set_state` passes.

pub const ESTABLISHED: u32 = 1;
pub const SYN_SENT: u32 = 2;
pub const SYN_RECV: u32 = 3;
pub const FIN_WAIT1: u32 = 4;
pub const FIN_WAIT2: u32 = 5;
pub const TIME_WAIT: u32 = 6;
pub const CLOSE: u32 = 7;
pub const CLOSE_WAIT: u32 = 8;
pub const LAST_ACK: u32 = 9;
pub const LISTEN: u32 = 10;
pub const CLOSING: u32 = 11;
pub const NEW_SYN_RECV: u32 = 12;

/// Their names, by number, as the kernel's header (and `ss`) spell them.
const NAMES: [&str; 13] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

/// State `state`'s name; `UNKNOWN` for a number the kernel does not use.
pub fn name(state: u32) -> &'static str {
    NAMES.get(state as usize).copied().unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_the_kernels_numbers() {
        assert_eq!(super::name(super::FIN_WAIT1), "FIN_WAIT1");
        assert_eq!(super::name(super::CLOSING), "CLOSING");
        assert_eq!(super::name(super::NEW_SYN_RECV), "NEW_SYN_RECV");
        assert_eq!(super::name(99), "UNKNOWN");
    }
}
