//! sockbuf's task runner: `cargo xtask <task>`. It orchestrates; cargo builds.

mod bench;
mod cmd;
mod lint;
mod run;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "sockbuf's tasks: set-up, run, test, lint")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and running sockbuf needs (the pinned nightly with rust-src, llvm-22-dev,
    /// bpf-linker, iproute2) and mount tracefs and bpffs; says what it does.
    Setup,
    /// Set up, then build and run sockbuf (as root) with the given arguments; by default
    /// its main job.
    Run(run::RunArgs),
    /// Set up, then run every test: lint, unit tests, and the integration tests that load
    /// the real programs into this kernel (as root, one at a time).
    Test(test::TestArgs),
    /// rustfmt check and clippy with warnings as errors.
    Lint,
    /// Overhead of sockbuf beside an untraced run and bpftrace, side by side; --quick for CI.
    Bench(bench::BenchArgs),
    /// The integration tests on Debian kernels (6.1, 6.12, 7.3) under QEMU, in each attach
    /// mode: kernels × modes with pass/fail/refused and timings (target/vm/results.md).
    VmTest(vm::VmTestArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Run(args) => run::run(args),
        Task::Test(args) => test::run(args),
        Task::Lint => lint::run(),
        Task::Bench(args) => bench::run(args),
        Task::VmTest(args) => vm::run(args).map(|_| ()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
