//! Builds sockbuf and runs it as root.

use anyhow::bail;

use crate::{cmd, setup};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Arguments for sockbuf; default: `fill`, the send-buffer fill experiment, traced.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("sockbuf loads eBPF programs: run it as root (sudo cargo xtask run)");
    }
    setup::run()?;
    let default = vec!["fill".to_owned()];
    let sockbuf_args = if args.args.is_empty() {
        default
    } else {
        args.args
    };
    cmd::run(
        cmd::cargo()
            .args(["run", "--release", "--bin", "sockbuf", "--"])
            .args(&sockbuf_args),
    )
}
