//! Every test: lint, unit tests, and integration tests that load the real programs.

use anyhow::bail;

use crate::{cmd, lint, setup};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Only tests whose name contains this.
    filter: Option<String>,
    /// Skip the lint step.
    #[arg(long)]
    no_lint: bool,
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the integration tests load eBPF programs: run them as root (sudo cargo xtask test)");
    }
    setup::run()?;
    if !args.no_lint {
        lint::run()?;
    }
    // One test at a time: each one loads its own programs and makes its own traffic, and
    // another test's traffic must not land in its numbers.
    let mut test = cmd::cargo();
    test.args(["test", "--all-features", "--"]);
    if let Some(f) = &args.filter {
        test.arg(f);
    }
    test.arg("--test-threads=1");
    cmd::run(&mut test)
}
