//! Admission limits: sizes, rows, columns, concurrency and time.
//!
//! Limits are checked as early as their figure is known: upload bytes while the stream arrives,
//! cross-join output from input row counts before the join runs, result shape after execution but
//! before anything is persisted. Concurrency is a semaphore with a bounded wait, so an overloaded
//! worker answers RESOURCE_EXHAUSTED quickly instead of queueing without end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

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
    /// Most rows a cross join may produce.
    pub max_cross_join_rows: u64,
    /// Memory one SQL query may use for joins, sorts and aggregations.
    pub max_sql_memory_bytes: usize,
    /// Operations running at once.
    pub max_concurrent_ops: usize,
    /// Longest wait for an operation slot.
    pub queue_timeout: Duration,
    /// Longest an operation may run.
    pub request_timeout: Duration,
}

impl Limits {
    /// Refuses a result whose shape exceeds the row or column limit.
    pub fn check_shape(&self, rows: usize, columns: usize) -> Result<()> {
        if rows as u64 > self.max_result_rows {
            rejected("result_rows");
            return Err(Error::ResourceExhausted(format!(
                "result has {rows} rows; the limit is {} (POLARWAY_MAX_RESULT_ROWS)",
                self.max_result_rows
            )));
        }
        if columns as u64 > self.max_result_columns {
            rejected("result_columns");
            return Err(Error::ResourceExhausted(format!(
                "result has {columns} columns; the limit is {} (POLARWAY_MAX_RESULT_COLUMNS)",
                self.max_result_columns
            )));
        }
        Ok(())
    }

    /// Refuses a cross join whose output would exceed the limit.
    pub fn check_cross_join(&self, left_rows: u64, right_rows: u64) -> Result<()> {
        let rows = left_rows.saturating_mul(right_rows);
        if rows > self.max_cross_join_rows {
            rejected("cross_join_rows");
            return Err(Error::ResourceExhausted(format!(
                "cross join would produce {rows} rows; the limit is {} (POLARWAY_MAX_CROSS_JOIN_ROWS)",
                self.max_cross_join_rows
            )));
        }
        Ok(())
    }

    /// Refuses an upload once it has passed the byte limit.
    pub fn check_put_bytes(&self, bytes: u64) -> Result<()> {
        if bytes > self.max_put_bytes {
            rejected("put_bytes");
            return Err(Error::ResourceExhausted(format!(
                "upload exceeds {} bytes (POLARWAY_MAX_PUT_BYTES)",
                self.max_put_bytes
            )));
        }
        Ok(())
    }
}

/// Slots for concurrent operations.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl Admission {
    /// Creates `slots` slots; a request waits at most `wait` for one.
    pub fn new(slots: usize, wait: Duration) -> Self {
        Self { slots: Arc::new(Semaphore::new(slots.max(1))), wait }
    }

    /// Takes a slot, or fails with RESOURCE_EXHAUSTED when none frees up in time.
    pub async fn try_admit(&self) -> Result<OwnedSemaphorePermit> {
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

/// Counts a refusal by `limit` in the metrics.
pub(crate) fn rejected(limit: &'static str) {
    crate::metrics::metrics().limit_rejections.with_label_values(&[limit]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admission_times_out_when_full() {
        let admission = Admission::new(1, Duration::from_millis(20));
        let _held = admission.try_admit().await.unwrap();
        let err = admission.try_admit().await.unwrap_err();
        assert!(matches!(err, Error::Overloaded(_)));
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.metadata().get(crate::error::RETRY_AFTER).unwrap(), "1");
    }

    #[test]
    fn cross_join_guard_saturates() {
        let limits = crate::config::Config::with_store(crate::config::StoreConfig::Memory).limits;
        assert!(limits.check_cross_join(u64::MAX, 2).is_err());
        assert!(limits.check_cross_join(10, 10).is_ok());
    }
}
