//! The runtime computation runs on, apart from the runtime that serves connections.
//!
//! DataFusion is async: a query is a tree of streams whose polls do the work, and a hash
//! aggregation spawns one task per partition on whatever runtime it is polled from. Polled on the
//! runtime that accepts connections and moves response bytes, a sort or an aggregation holds those
//! threads for as long as one batch takes, and every other call on the worker waits behind it:
//! on a 2-core machine, two partitions are all of them. So computation that is async runs here,
//! on a runtime of its own ([`run`], [`block_on`]), and computation that is not runs on the
//! blocking pool (`engine::exec`). The I/O threads only move bytes and wait.
//!
//! The runtime has a thread per core, with the stacks deep plans need
//! ([`crate::memory::THREAD_STACK_BYTES`]). It is made on first use and lives as long as the
//! process. The operating system shares the cores between it and the I/O threads, which are idle
//! but for short bursts, so a call that needs one gets it at once.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// The process's computation runtime.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("polarway-cpu")
            .thread_stack_size(crate::memory::THREAD_STACK_BYTES)
            .enable_all()
            .build()
            .expect("the computation runtime starts")
    })
}

/// Runs `work` on the computation runtime and waits for it from wherever this is awaited. When
/// the wait is dropped (the request's deadline passed, the client went away) the work is aborted
/// at its next await. A panic comes back as its message.
pub async fn run<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> std::result::Result<T, String> {
    let task = Aborting(runtime().spawn(crate::contain::catch_async(work)));
    match task.wait().await {
        Ok(outcome) => outcome,
        Err(e) => Err(format!("the computation task ended without an answer: {e}")),
    }
}

/// Runs `work` to its end from a thread that is not a runtime's (the blocking pool), on the
/// computation runtime: tasks it spawns go there too. Called from an async task, tokio panics.
pub fn block_on<F: Future>(work: F) -> F::Output {
    runtime().block_on(work)
}

/// A task aborted when its handle is dropped.
struct Aborting<T>(JoinHandle<T>);

impl<T> Aborting<T> {
    async fn wait(mut self) -> std::result::Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_computation_threads_and_stops_when_abandoned() {
        let name = run(async { std::thread::current().name().map(str::to_string) }).await.unwrap();
        assert_eq!(name.as_deref(), Some("polarway-cpu"));
        assert!(run(async { panic!("boom") }).await.unwrap_err().contains("boom"));

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let abandoned = run(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        assert!(tokio::time::timeout(Duration::from_millis(20), abandoned).await.is_err());
        // The sleeping task was aborted, which drops `tx`.
        assert!(tokio::time::timeout(Duration::from_secs(5), rx).await.unwrap().is_err());
    }

    #[test]
    fn block_on_from_a_plain_thread_uses_the_computation_runtime() {
        let name = block_on(async { tokio::spawn(async { std::thread::current().name().map(str::to_string) }).await })
            .unwrap();
        assert_eq!(name.as_deref(), Some("polarway-cpu"));
    }
}
