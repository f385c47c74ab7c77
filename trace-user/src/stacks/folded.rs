//! `--folded` and `--flamegraph`: stacks summed as `comm;outer;…;inner value`, the format
//! every flame-graph tool reads, and drawn with inferno.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::Frames;

/// What one folded file weighs its stacks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    /// Microseconds asleep on a full send buffer.
    Asleep,
    /// EAGAINs.
    Eagain,
    /// Send calls (`--stacks all`).
    Calls,
}

impl Weight {
    /// The file of this weight beside `path`: `path` itself for time asleep,
    /// `path.eagain` and `path.calls` for the counts.
    pub fn file(self, path: &Path) -> PathBuf {
        let suffix = match self {
            Weight::Asleep => return path.to_owned(),
            Weight::Eagain => "eagain",
            Weight::Calls => "calls",
        };
        // An SVG stays one: `graph.svg` → `graph.eagain.svg`.
        if path.extension().is_some_and(|e| e == "svg") {
            return path.with_extension(format!("{suffix}.svg"));
        }
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{suffix}"));
        PathBuf::from(name)
    }

    fn title(self) -> &'static str {
        match self {
            Weight::Asleep => "Time asleep on a full send buffer",
            Weight::Eagain => "Send calls that got EAGAIN",
            Weight::Calls => "Send calls",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Weight::Asleep => "us",
            Weight::Eagain | Weight::Calls => "calls",
        }
    }
}

/// Stacks summed per weight.
#[derive(Default)]
pub struct Folded {
    /// Nanoseconds asleep (written as microseconds).
    asleep_ns: HashMap<String, u64>,
    eagain: HashMap<String, u64>,
    calls: HashMap<String, u64>,
}

impl Folded {
    /// Adds `value` (nanoseconds for [`Weight::Asleep`]) to the stack `frames` of `comm`.
    pub fn add(&mut self, weight: Weight, comm: &str, frames: &Frames, value: u64) {
        let sums = match weight {
            Weight::Asleep => &mut self.asleep_ns,
            Weight::Eagain => &mut self.eagain,
            Weight::Calls => &mut self.calls,
        };
        *sums.entry(line_key(comm, frames)).or_default() += value;
    }

    /// The folded lines of `weight`, sorted (as `stackcollapse` writes them).
    pub fn lines(&self, weight: Weight) -> Vec<String> {
        let (sums, div) = match weight {
            Weight::Asleep => (&self.asleep_ns, 1000),
            Weight::Eagain => (&self.eagain, 1),
            Weight::Calls => (&self.calls, 1),
        };
        let mut lines: Vec<String> = sums
            .iter()
            .map(|(k, v)| format!("{k} {}", v / div))
            .collect();
        lines.sort();
        lines
    }

    /// The files beside `path` (see [`Weight::file`]) with their lines: time asleep always,
    /// the counts when there are any.
    fn files(&self, path: &Path) -> impl Iterator<Item = (Weight, PathBuf, Vec<String>)> {
        [Weight::Asleep, Weight::Eagain, Weight::Calls]
            .into_iter()
            .map(|w| (w, w.file(path), self.lines(w)))
            .filter(|(w, _, lines)| *w == Weight::Asleep || !lines.is_empty())
    }

    /// Writes the folded files beside `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        for (_, file, lines) in self.files(path) {
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&file).with_context(|| format!("{}", file.display()))?,
            );
            for l in &lines {
                writeln!(out, "{l}")?;
            }
            out.flush().with_context(|| format!("{}", file.display()))?;
        }
        Ok(())
    }

    /// Draws the flame graphs beside `path` (an SVG of time asleep; `.eagain.svg`,
    /// `.calls.svg` for the counts when there are any).
    pub fn flamegraph(&self, path: &Path) -> anyhow::Result<()> {
        for (w, file, lines) in self.files(path) {
            let mut opts = inferno::flamegraph::Options::default();
            opts.title = w.title().to_owned();
            opts.count_name = w.unit().to_owned();
            let out =
                std::fs::File::create(&file).with_context(|| format!("{}", file.display()))?;
            if lines.is_empty() {
                // inferno refuses an empty graph: say so in an SVG of its own.
                let mut out = out;
                write!(
                    out,
                    r#"<svg xmlns="http://www.w3.org/2000/svg" width="600" height="40"><text x="10" y="25">{}: no stacks</text></svg>"#,
                    w.title()
                )?;
                continue;
            }
            inferno::flamegraph::from_lines(
                &mut opts,
                lines.iter().map(String::as_str),
                std::io::BufWriter::new(out),
            )
            .with_context(|| format!("drawing {}", file.display()))?;
        }
        Ok(())
    }
}

/// `comm;user outermost;…;user innermost;kernel outermost_[k];…;kernel innermost_[k]`
/// (`_[k]` marks kernel frames, as bcc's tools and flamegraph.pl's palettes do).
fn line_key(comm: &str, f: &Frames) -> String {
    let clean = |s: &str| s.replace([';', ' '], "_");
    let mut parts = vec![clean(comm)];
    parts.extend(f.user.iter().rev().map(|s| clean(s)));
    parts.extend(f.kernel.iter().rev().map(|s| format!("{}_[k]", clean(s))));
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_lines_outermost_first_kernel_marked() {
        let f = Frames {
            user: vec!["write".into(), "push_until_full".into(), "main".into()],
            kernel: vec!["sk_stream_wait_memory".into(), "tcp_sendmsg_locked".into()],
        };
        let mut folded = Folded::default();
        folded.add(Weight::Asleep, "writer", &f, 1_500_000);
        folded.add(Weight::Asleep, "writer", &f, 500_000);
        folded.add(Weight::Eagain, "writer", &f, 1);
        assert_eq!(
            folded.lines(Weight::Asleep),
            [
                "writer;main;push_until_full;write;tcp_sendmsg_locked_[k];sk_stream_wait_memory_[k] 2000"
            ]
        );
        assert_eq!(folded.lines(Weight::Eagain).len(), 1);
        assert!(folded.lines(Weight::Calls).is_empty());
        assert_eq!(
            Weight::Eagain.file(Path::new("/tmp/w.folded")),
            Path::new("/tmp/w.folded.eagain")
        );
        assert_eq!(
            Weight::Calls.file(Path::new("w.svg")),
            Path::new("w.calls.svg")
        );
    }
}
