//! Empty on purpose: trace-user lists this crate as a build-dependency so that cargo rebuilds
//! the loader when the eBPF programs change; the programs themselves are the binary target.
#![no_std]
