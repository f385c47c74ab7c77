//! `--stacks` and what is made of the stacks: shared by `trace` and `fill`.

use std::path::PathBuf;

use clap::Args;

/// Which calls' stacks are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StacksWhich {
    /// Each sleep on a full send buffer and each send call that got EAGAIN.
    Waits,
    /// Those, and every send call.
    All,
}

#[derive(Debug, Args, Clone, Default)]
pub struct StackArgs {
    /// Take the user and kernel stacks of each sleep on a full send buffer and each EAGAIN
    /// (`--stacks all`: of every send call), named with the processes' own symbols (DWARF
    /// where present); shown with each event.
    #[arg(long, value_enum, value_name = "WHICH", num_args = 0..=1,
          default_missing_value = "waits")]
    pub stacks: Option<StacksWhich>,

    /// Write folded stacks (`comm;outer;…;inner value`) weighted by microseconds asleep to
    /// FILE, and EAGAIN counts to FILE.eagain (send calls to FILE.calls with `--stacks
    /// all`): what flamegraph.pl, inferno and speedscope read. Implies --stacks.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Draw them as flame graphs: FILE.svg of the time asleep, FILE.eagain.svg and
    /// FILE.calls.svg of the counts. Implies --stacks.
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<PathBuf>,

    /// Distinct stacks the kernel holds; a stack past it is counted as lost and reported.
    #[arg(long, value_name = "N", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(64..=1 << 20))]
    pub max_stacks: u32,
}

impl StackArgs {
    /// Fails at once, before anything is traced, when a file asked for cannot be written.
    pub fn check_paths(&self) -> Result<(), crate::error::SetupError> {
        for (flag, path) in [
            ("--folded", &self.folded),
            ("--flamegraph", &self.flamegraph),
        ] {
            if let Some(path) = path {
                std::fs::File::create(path).map_err(|e| crate::error::SetupError::Output {
                    flag,
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    /// Which calls' stacks the programs take (`trace_common::stacks`).
    pub fn mode(&self) -> u32 {
        use trace_common::stacks::{ALL, OFF, WAITS};
        match self.stacks {
            Some(StacksWhich::All) => ALL,
            Some(StacksWhich::Waits) => WAITS,
            None if self.folded.is_some() || self.flamegraph.is_some() => WAITS,
            None => OFF,
        }
    }
}
