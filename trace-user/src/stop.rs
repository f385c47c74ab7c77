//! When a session ends: Ctrl-C, SIGTERM, the duration running out, or a reason of the caller's.

use std::{future::Future, sync::OnceLock, time::Duration};

use nix::sys::signal::{SigSet, SigmaskHow, Signal as Sig, pthread_sigmask};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::Mutex,
};

/// SIGINT and SIGTERM, each watched once for the whole process (`None`: could not be).
struct Watched {
    int: Option<Signal>,
    term: Option<Signal>,
}

static WATCHED: OnceLock<Mutex<Watched>> = OnceLock::new();

/// Starts watching SIGINT and SIGTERM, for a command that ends on them: called before the
/// programs load, which can take seconds (the verifier, a refused backend and the next one
/// tried). A signal that comes meanwhile ends the session as soon as it starts, where it
/// was lost before (a background job of a non-interactive shell starts with SIGINT ignored,
/// and a `kill -INT` then went unseen until another came) or ended sockbuf by the default
/// action, its clean-up skipped. Needs the runtime; watching twice is watching once.
pub fn watch() {
    watched();
}

fn watched() -> &'static Mutex<Watched> {
    WATCHED.get_or_init(|| {
        let watch = |kind: SignalKind, name: &str| {
            signal(kind)
                .inspect_err(|e| log::warn!("cannot watch {name}: {e}"))
                .ok()
        };
        Mutex::new(Watched {
            int: watch(SignalKind::interrupt(), "SIGINT"),
            term: watch(SignalKind::terminate(), "SIGTERM"),
        })
    })
}

/// SIGINT, SIGTERM and SIGTSTP held back on this thread while it lives: the kernel's
/// verifier, and aya's probes of the kernel's features before it, give up with EAGAIN when
/// a signal is pending. A Ctrl-C (or Ctrl-Z) in the middle of the load made a probe fail
/// (aya then took global data for unsupported, and the object failed to relocate) or a
/// backend look refused. Held back, it waits until the programs are loaded: Ctrl-C then
/// ends the session as soon as it starts (see [`watch`]), Ctrl-Z stops it there. (SIGSTOP
/// cannot be held back: `kill -STOP` during the load can still fail it.)
pub struct HeldBack(Option<SigSet>);

impl HeldBack {
    pub fn new() -> Self {
        let mut set = SigSet::empty();
        set.add(Sig::SIGINT);
        set.add(Sig::SIGTERM);
        set.add(Sig::SIGTSTP);
        let mut before = SigSet::empty();
        let held = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut before))
            .inspect_err(|e| log::warn!("cannot hold SIGINT back while loading: {e}"))
            .is_ok();
        Self(held.then_some(before))
    }
}

impl Default for HeldBack {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HeldBack {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(before), None);
        }
    }
}

/// One of the signals, or never where it could not be watched.
async fn received(s: &mut Option<Signal>) {
    match s {
        Some(s) => drop(s.recv().await),
        None => std::future::pending().await,
    }
}

/// Resolves on SIGINT, SIGTERM (either one received since [`watch`], and not taken by an
/// earlier stop), after `duration`, or when `other` resolves.
pub async fn stop_on(duration: Option<Duration>, other: impl Future<Output = ()>) {
    // The lock inside its own arm: a stop that waits for it still ends on the others.
    let signals = async {
        let mut watched = watched().lock().await;
        let Watched { int, term } = &mut *watched;
        tokio::select! {
            () = received(int) => {}
            () = received(term) => {}
        }
    };
    let timeout = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = signals => {}
        () = timeout => {}
        () = other => {}
    }
}
