//! When a session ends: Ctrl-C, SIGTERM, the duration running out, or a reason of the caller's.

use std::{future::Future, time::Duration};

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on SIGINT, SIGTERM, after `duration`, or when `other` resolves.
pub async fn stop_on(duration: Option<Duration>, other: impl Future<Output = ()>) {
    let mut term = signal(SignalKind::terminate())
        .inspect_err(|e| log::warn!("cannot watch SIGTERM: {e}"))
        .ok();
    let sigterm = async {
        match &mut term {
            Some(t) => drop(t.recv().await),
            None => std::future::pending().await,
        }
    };
    let timeout = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm => {}
        () = timeout => {}
        () = other => {}
    }
}
