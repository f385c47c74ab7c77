//! sockbuf's eBPF programs.
//!
//! `model` holds the one event model (what a send, a sleep and an ACK mean); the attach
//! backends (`tracepoint` today) only pull their hook's arguments and call into it.
#![no_std]
#![no_main]
// BPF's atomic add (`count`): the target offers no `AtomicU64::fetch_add`.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod agg;
mod calls;
mod count;
mod entry;
mod fentry;
mod filter;
mod inflight;
mod kernel;
mod kprobe;
mod layer;
mod life;
mod maps;
mod model;
mod recv;
mod sk_counts;
mod stacks;
mod standby;
mod syscall;
mod tp_btf;
mod tracepoint;
mod udp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
