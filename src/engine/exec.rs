//! The one way work runs on a worker: admitted, within the request's deadline, on the blocking
//! pool, with a panic contained to the request.
//!
//! Every computation (a pipeline, a file read or write, an exchange, an SQL query) goes through
//! [`Executor::compute`] or [`Executor::compute_async`], in this order: the deadline is the
//! request's, so time spent waiting for a slot counts against it; the slot is taken before any
//! Polars or DataFusion work starts; the work runs off the threads that serve connections (Polars
//! on the blocking pool, DataFusion on [`crate::cpu`]'s runtime); a panic inside it (Polars
//! can panic on odd input) becomes INTERNAL and the worker keeps serving. Store calls and
//! conversions that need no slot go through [`blocking`] or [`in_place`], which contain panics the
//! same way. [`crate::contain`] is the one place a panic is caught.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::RequestContext;
use crate::error::{Error, Result};
use crate::limits::Admission;

/// Operation slots and the count of operations run.
pub struct Executor {
    admission: Admission,
    executions: AtomicU64,
}

impl Executor {
    /// An executor whose operations take slots from `admission`.
    pub fn new(admission: Admission) -> Executor {
        Executor { admission, executions: AtomicU64::new(0) }
    }

    /// How many operations have run (results found already stored are not counted).
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::Relaxed)
    }

    /// Refuses at once when every slot is taken and the queue is full; checked before a request
    /// reads anything for its work.
    pub fn shed(&self) -> Result<()> {
        self.admission.shed()
    }

    /// Runs `f` as one operation on the blocking pool. The slot stays taken until `f` returns,
    /// even past the deadline, so a runaway computation cannot be joined by ever more of them.
    pub async fn compute<T, F>(&self, ctx: &RequestContext, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        within(ctx, async {
            let slot = self.admission.try_admit().await?;
            self.executions.fetch_add(1, Ordering::Relaxed);
            blocking(move || {
                let _slot = slot;
                f()
            })
            .await
        })
        .await
    }

    /// Runs async work (a DataFusion query, which schedules its own tasks) as one operation, on
    /// the computation runtime ([`crate::cpu`]); past the deadline it is aborted.
    pub async fn compute_async<T: Send + 'static>(
        &self,
        ctx: &RequestContext,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        within(ctx, async {
            let _slot = self.admission.try_admit().await?;
            self.executions.fetch_add(1, Ordering::Relaxed);
            on_cpu(work).await
        })
        .await
    }
}

/// Fails with DEADLINE_EXCEEDED when `work` is not done by the request's deadline.
pub async fn within<T>(ctx: &RequestContext, work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout_at(ctx.deadline(), work).await.unwrap_or_else(|_| {
        Err(Error::DeadlineExceeded(format!(
            "operation ran longer than {} s (POLARWAY_REQUEST_TIMEOUT_SECS)",
            ctx.timeout().as_secs_f64()
        )))
    })
}

/// Runs async computation without a slot (SQL planning) on the computation runtime
/// ([`crate::cpu`]); a panic becomes INTERNAL.
pub async fn on_cpu<T: Send + 'static>(work: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    crate::cpu::run(work).await.unwrap_or_else(|panic| Err(operation_panicked(&panic)))
}

/// Runs `f` on the blocking pool without a slot (store I/O, conversion); a panic becomes INTERNAL.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || crate::contain::catch(f)).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(operation_panicked(&panic)),
        Err(_) => Err(Error::Internal("the operation was cancelled".into())),
    }
}

/// Runs `f` here, for calls that never wait (an in-memory lookup, where a hop to the blocking pool
/// and back takes longer than the call); a panic becomes INTERNAL.
pub fn in_place<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::contain::catch(f).unwrap_or_else(|panic| Err(operation_panicked(&panic)))
}

/// The error for an operation that panicked with `message`, logged once here.
fn operation_panicked(message: &str) -> Error {
    tracing::error!(panic = message, "operation panicked");
    Error::Internal(format!("the operation failed unexpectedly: {message}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn executor(slots: usize) -> Executor {
        Executor::new(Admission::new(slots, 4, Duration::from_secs(60)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_becomes_internal_on_every_path() {
        let ctx = RequestContext::new(None, Duration::from_secs(60), "t");
        let exec = executor(2);
        let err = exec.compute(&ctx, || -> Result<()> { panic!("boom") }).await.unwrap_err();
        assert!(matches!(err, Error::Internal(m) if m.contains("boom")));
        let err = exec.compute_async(&ctx, async { panic!("async boom") as Result<()> }).await.unwrap_err();
        assert!(matches!(err, Error::Internal(m) if m.contains("async boom")));
        let err = blocking(|| -> Result<()> { panic!("bang") }).await.unwrap_err();
        assert!(matches!(err, Error::Internal(m) if m.contains("bang")));
        let err = in_place(|| -> Result<()> { panic!("here") }).unwrap_err();
        assert!(matches!(err, Error::Internal(m) if m.contains("here")));
        // The worker goes on: the slots were given back.
        assert_eq!(exec.compute(&ctx, || Ok(7)).await.unwrap(), 7);
        assert_eq!(exec.compute(&ctx, || Ok(8)).await.unwrap(), 8);
        assert_eq!(exec.executions(), 4);
    }

    #[tokio::test]
    async fn the_wait_for_a_slot_counts_against_the_deadline() {
        let exec = executor(1);
        let held = exec.admission.try_admit().await.unwrap();
        // The queue would wait a minute; the request has 50 ms.
        let ctx = RequestContext::new(None, Duration::from_millis(50), "t");
        let err = exec.compute(&ctx, || Ok(())).await.unwrap_err();
        assert!(matches!(err, Error::DeadlineExceeded(_)), "{err:?}");
        let err = exec.compute_async(&ctx, async { Ok(()) }).await.unwrap_err();
        assert!(matches!(err, Error::DeadlineExceeded(_)), "{err:?}");
        drop(held);
        let ctx = RequestContext::new(None, Duration::from_secs(60), "t");
        exec.compute(&ctx, || Ok(())).await.unwrap();
    }
}
