//! The Tokio runtime the server runs on.
//!
//! Tokio's multi-thread scheduler runs a task woken by the running task next, ahead of every
//! task already queued (its "LIFO slot"). For a gRPC server that is the wrong order: when a
//! handler finishes, it wakes its HTTP/2 connection's task, which then writes that one answer
//! at once, a `writev` (and, for an idle peer, a wake-up of the peer) per answer, before the
//! handlers queued behind it have run. With the slot disabled the connection's task waits its
//! turn behind them and writes every answer they finished in one go. Every audited answer is
//! released with the group its disclosure was made durable in, so a group's answers are ready
//! together. Measured with `mpi-bench floor` (docs/benchmarks.md, "The scheduler's LIFO
//! slot"): `writev` calls per FindLocations 2.5 → 1.2 (client and server together), and
//! FindLocations +20–30 %, the bare echo server +14 %.
//!
//! Disabling the slot is one of Tokio's unstable options, compiled only with `--cfg
//! tokio_unstable`, which this repository's `.cargo/config.toml` sets. A build without it
//! (a `RUSTFLAGS` environment variable replaces the file's flags) still works, with the slot
//! on; [`LIFO_SLOT_DISABLED`] says which, and `kouiki-mpi serve` warns at start.

/// Whether [`builder`] disables the LIFO slot (the build had `--cfg tokio_unstable`).
pub const LIFO_SLOT_DISABLED: bool = cfg!(tokio_unstable);

/// A multi-thread runtime builder with every driver enabled and, when the build allows, the
/// LIFO slot disabled. Callers add their own settings (worker threads, thread hooks).
pub fn builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// On a runtime of one worker: tasks `first` and `second` wait, and a third task wakes
    /// `first` and then `second`. Returns the order they ran in.
    fn order_of_wakes(mut builder: tokio::runtime::Builder) -> Vec<&'static str> {
        let runtime = builder.worker_threads(1).build().unwrap();
        let ran = Arc::new(Mutex::new(Vec::new()));
        runtime.block_on({
            let ran = ran.clone();
            async move {
                let (wake_first, first) = tokio::sync::oneshot::channel::<()>();
                let (wake_second, second) = tokio::sync::oneshot::channel::<()>();
                let waiting = [("first", first), ("second", second)].map(|(name, woken)| {
                    let ran = ran.clone();
                    tokio::spawn(async move {
                        woken.await.unwrap();
                        ran.lock().unwrap().push(name);
                    })
                });
                // The waker runs on the worker too (not on this `block_on` thread), after the
                // two have started waiting.
                tokio::spawn(async move {
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                    wake_first.send(()).unwrap();
                    wake_second.send(()).unwrap();
                })
                .await
                .unwrap();
                for task in waiting {
                    task.await.unwrap();
                }
            }
        });
        ran.lock().unwrap().clone()
    }

    #[test]
    // Constant per build, and meant to fail a build that lost the flag (not to stop it compiling).
    #[allow(clippy::assertions_on_constants)]
    fn the_repository_builds_the_server_without_the_lifo_slot() {
        assert!(
            LIFO_SLOT_DISABLED,
            "built without `--cfg tokio_unstable`: is .cargo/config.toml replaced by RUSTFLAGS?"
        );
    }

    #[test]
    fn woken_tasks_run_in_the_order_they_were_woken() {
        // Tokio's default: the last task woken runs first, ahead of the one woken before it.
        let mut default = tokio::runtime::Builder::new_multi_thread();
        default.enable_all();
        assert_eq!(order_of_wakes(default), ["second", "first"]);
        // The server's runtime: first come, first served.
        assert_eq!(order_of_wakes(builder()), ["first", "second"]);
    }
}
