//! Admission limits: sizes, rows, columns, concurrency and time.
//!
//! Limits are checked as early as their figure is known: upload bytes while the stream arrives,
//! cross-join output from input row counts before the join runs, result shape after execution but
//! before anything is persisted. Concurrency is a semaphore with a bounded wait, so an overloaded
//! worker answers RESOURCE_EXHAUSTED quickly instead of queueing without end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::{Error, Result};

pub use crate::error::Limit;

impl Limit {
    /// The error for a request past this limit, counted in the metrics; `detail` says by how much.
    pub fn exceeded(self, detail: impl Into<String>) -> Error {
        rejected(self.label());
        Error::LimitExceeded { limit: self, detail: detail.into() }
    }
}

/// Configured limits of one worker.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest DoPut upload, in bytes of Arrow IPC bodies received.
    pub max_put_bytes: u64,
    /// Largest gRPC message decoded or encoded.
    pub max_message_bytes: usize,
    /// Most rows in one result.
    pub max_result_rows: u64,
    /// Most columns in one result.
    pub max_result_columns: u64,
    /// Most rows one join may produce.
    pub max_join_rows: u64,
    /// Largest result, in bytes of Arrow buffers.
    pub max_result_bytes: u64,
    /// Memory one SQL query may use for joins, sorts and aggregations.
    pub max_sql_memory_bytes: usize,
    /// Operations running at once.
    pub max_concurrent_ops: usize,
    /// Requests that may wait for an operation slot; more are refused at once.
    pub max_queued_ops: usize,
    /// Longest wait for an operation slot.
    pub queue_timeout: Duration,
    /// Longest an operation may run.
    pub request_timeout: Duration,
    /// Most files one scan may list.
    pub max_scan_files: usize,
    /// Most bytes of files one scan may list (0: no limit).
    pub max_scan_bytes: u64,
}

impl Limits {
    /// Refuses a result whose shape exceeds the row or column limit.
    pub fn check_shape(&self, rows: usize, columns: usize) -> Result<()> {
        if rows as u64 > self.max_result_rows {
            return Err(
                Limit::ResultRows.exceeded(format!("result has {rows} rows; the limit is {}", self.max_result_rows))
            );
        }
        if columns as u64 > self.max_result_columns {
            return Err(Limit::ResultColumns
                .exceeded(format!("result has {columns} columns; the limit is {}", self.max_result_columns)));
        }
        Ok(())
    }

    /// Refuses a result of `bytes`, or one estimated at that, past the byte limit.
    pub fn check_bytes(&self, bytes: u64, estimated: bool) -> Result<()> {
        if bytes > self.max_result_bytes {
            let what = if estimated { "would take about" } else { "takes" };
            return Err(Limit::ResultBytes
                .exceeded(format!("result {what} {bytes} bytes; the limit is {}", self.max_result_bytes)));
        }
        Ok(())
    }

    /// Refuses a cross join whose output would exceed the limit.
    pub fn check_cross_join(&self, left_rows: u64, right_rows: u64) -> Result<()> {
        self.check_join("cross", left_rows.saturating_mul(right_rows))
    }

    /// Refuses a join of kind `how` that would produce more than the limit's rows.
    pub fn check_join(&self, how: &str, rows: u64) -> Result<()> {
        if rows > self.max_join_rows {
            return Err(Limit::JoinRows
                .exceeded(format!("{how} join would produce {rows} rows; the limit is {}", self.max_join_rows)));
        }
        Ok(())
    }

    /// Refuses an upload once it has passed the byte limit.
    pub fn check_put_bytes(&self, bytes: u64) -> Result<()> {
        if bytes > self.max_put_bytes {
            return Err(Limit::PutBytes.exceeded(format!("upload exceeds {} bytes", self.max_put_bytes)));
        }
        Ok(())
    }
}

/// Slots for concurrent operations, with a bounded queue in front of them.
///
/// A request takes a free slot at once, or waits for one in the queue for at most `wait`. When
/// the queue is full too it is refused at once: under overload the excess learns within a round
/// trip that it should go elsewhere or come back later, instead of each refusal first waiting out
/// the queue timeout while the backlog grows.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    wait: Duration,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

/// Leaves the queue when dropped, whether the wait ended with a slot, a timeout or a cancel.
struct InQueue<'a>(&'a AtomicUsize);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// Creates `slots` slots and a queue of `max_queued` waiters; a request waits at most `wait`.
    pub fn new(slots: usize, max_queued: usize, wait: Duration) -> Self {
        Self { slots: Arc::new(Semaphore::new(slots.max(1))), wait, queued: Arc::new(AtomicUsize::new(0)), max_queued }
    }

    /// Refuses at once when every slot is taken and the queue is full: checked when a computing
    /// request arrives, before it reads anything, so excess load costs the worker next to nothing.
    pub fn shed(&self) -> Result<()> {
        if self.slots.available_permits() == 0 && self.queued.load(Ordering::Relaxed) >= self.max_queued {
            rejected("queue");
            return Err(queue_full());
        }
        Ok(())
    }

    /// Takes a slot, or fails with RESOURCE_EXHAUSTED when the queue is full or no slot frees up
    /// in time.
    pub async fn try_admit(&self) -> Result<OwnedSemaphorePermit> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(Error::Unavailable("worker is shutting down".into())),
            Err(TryAcquireError::NoPermits) => {}
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            rejected("queue");
            return Err(queue_full());
        }
        let _in_queue = InQueue(&self.queued);
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(Error::Unavailable("worker is shutting down".into())),
            Err(_elapsed) => Err({
                rejected("concurrency");
                Error::Overloaded(
                    "worker busy: no operation slot became free in time (POLARWAY_MAX_CONCURRENT_OPS); retry after 1 s"
                        .into(),
                )
            }),
        }
    }
}

fn queue_full() -> Error {
    Error::Overloaded(
        "worker busy: every operation slot is taken and the queue is full (POLARWAY_MAX_QUEUED_OPS); retry after 1 s"
            .into(),
    )
}

/// Counts a refusal by `limit` in the metrics.
pub(crate) fn rejected(limit: &'static str) {
    crate::metrics::metrics().limit_rejections.with_label_values(&[limit]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admission_times_out_when_full() {
        let admission = Admission::new(1, 4, Duration::from_millis(20));
        let _held = admission.try_admit().await.unwrap();
        let err = admission.try_admit().await.unwrap_err();
        assert!(matches!(err, Error::Overloaded(_)));
        assert!(err.to_string().contains("in time"), "{err}");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.metadata().get(crate::protocol::RETRY_AFTER).unwrap(), "1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_and_a_freed_slot_goes_to_the_queue() {
        let admission = Admission::new(1, 1, Duration::from_secs(30));
        let held = admission.try_admit().await.unwrap();
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.try_admit().await.map(drop) }
        });
        while admission.queued.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(admission.shed().is_err(), "full: shed at the door");
        let started = std::time::Instant::now();
        let err = admission.try_admit().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "refused without waiting");
        assert!(err.to_string().contains("queue is full"), "{err}");
        drop(held);
        waiting.await.unwrap().unwrap();
        admission.shed().unwrap();
        assert_eq!(admission.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_limit_names_the_setting_that_raises_it() {
        let limits = crate::config::Config::with_store(crate::config::StoreConfig::Memory).limits;
        let err = limits.check_shape(limits.max_result_rows as usize + 1, 1).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded { limit: Limit::ResultRows, .. }), "{err:?}");
        assert!(err.to_string().ends_with("(POLARWAY_MAX_RESULT_ROWS)"), "{err}");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn cross_join_guard_saturates() {
        let limits = crate::config::Config::with_store(crate::config::StoreConfig::Memory).limits;
        assert!(limits.check_cross_join(u64::MAX, 2).is_err());
        assert!(limits.check_cross_join(10, 10).is_ok());
    }
}
