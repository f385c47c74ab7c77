//! sockbuf: what the kernel does with the bytes an application writes to a socket.
//!
//! The library behind the `sockbuf` binary: loading the eBPF programs, reading their events,
//! and the commands built on them.
pub mod acks;
pub mod attach;
pub mod bpfinfo;
pub mod btf;
pub mod check;
pub mod cli;
pub mod error;
pub mod export;
pub mod fill;
pub mod filter;
pub mod format;
pub mod hist;
pub mod lab;
pub mod layer;
pub mod loader;
pub mod netns;
pub mod output;
pub mod preflight;
pub mod replay;
pub mod session;
pub mod sockdiag;
pub mod sockio;
pub mod stacks;
pub mod stop;
pub mod summary;
pub mod top;
pub mod trace;
pub mod udp;
