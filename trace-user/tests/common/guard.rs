//! RAII for what a test starts or creates: a server process, a scratch directory. Gone
//! when dropped, also when the test panics.

use std::{
    ops::Deref,
    path::{Path, PathBuf},
    process::{Child, Command},
};

/// A child process (a server the test runs), killed and reaped when dropped.
pub struct Running(pub Child);

impl Running {
    pub fn spawn(cmd: &mut Command, what: &str) -> Self {
        Self(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("{what} (installed by cargo xtask test's set-up): {e}")),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `$TMPDIR/sockbuf-NAME-PID`, created empty, removed with its contents when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sockbuf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
