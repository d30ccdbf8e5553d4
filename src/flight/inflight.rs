//! Response bytes in flight: the worker's budget and each connection's, and the progress each
//! response stream makes.
//!
//! A DoGet reads its result one message at a time, and only once budget is granted for it. The
//! grant travels with the message's bytes ([`Grant::attach`]) through hyper and h2, and each part
//! gives its share back when h2 has written it to the socket and dropped it. The budget therefore
//! bounds every response byte the worker holds: in the producer, in hyper's hand-off, and in h2's
//! send buffers. A client that stops reading keeps what it was granted and gets no more, so N
//! stalled readers hold at most the budget.
//!
//! A stalled stream does not hold its grant for ever. Each HTTP/2 stream runs with a [`Progress`]
//! that the parts of its messages touch as they are written. The server resets a stream whose
//! bytes have waited longer than the stall timeout without any being written (`server::http2`),
//! and h2 frees what it had queued for it.
//!
//! Small messages may use a reserve that large ones cannot reach, so a worker whose bulk budget is
//! held by large, slow or stalled streams still serves small results at once. A connection has a
//! budget of its own as well, so one connection cannot take the whole worker's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Messages at most this large may take budget from the reserve.
pub const SMALL_MESSAGE: usize = 256 << 10;
/// Parts handed to HTTP/2 are at most this large, so a slow reader's progress is seen every
/// piece rather than every (multi-megabyte) message.
pub const PIECE: usize = 256 << 10;

/// The worker's budget for response bytes in flight.
pub struct Budget {
    bulk: Arc<Semaphore>,
    bulk_total: usize,
    reserve: Arc<Semaphore>,
    total: usize,
}

impl Budget {
    /// A budget of `total` bytes, an eighth of it (at most 32 MiB) reserved for small messages.
    pub fn new(total: usize) -> Budget {
        let total = total.max(2 * SMALL_MESSAGE);
        let reserve = (total / 8).clamp(SMALL_MESSAGE, 32 << 20);
        let bulk_total = total - reserve;
        Budget {
            bulk: Arc::new(Semaphore::new(bulk_total)),
            bulk_total,
            reserve: Arc::new(Semaphore::new(reserve)),
            total,
        }
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes granted and not yet given back.
    pub fn in_flight(&self) -> usize {
        self.total - self.bulk.available_permits() - self.reserve.available_permits()
    }

    /// Waits until `bytes` can be granted from this budget. A small message takes the reserve
    /// when the bulk budget is short; a message larger than the whole bulk budget waits for all
    /// of it.
    async fn acquire(&self, bytes: usize) -> OwnedSemaphorePermit {
        let n = permits(bytes.min(self.bulk_total));
        if let Ok(permit) = self.bulk.clone().try_acquire_many_owned(n) {
            return permit;
        }
        if bytes <= SMALL_MESSAGE {
            if let Ok(permit) = self.reserve.clone().try_acquire_many_owned(n) {
                return permit;
            }
            let permit = tokio::select! {
                permit = self.bulk.clone().acquire_many_owned(n) => permit,
                permit = self.reserve.clone().acquire_many_owned(n) => permit,
            };
            return permit.expect("the budget's semaphores are never closed");
        }
        self.bulk.clone().acquire_many_owned(n).await.expect("the budget's semaphores are never closed")
    }
}

fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes.max(1)).unwrap_or(u32::MAX)
}

/// One connection's budget for response bytes in flight; the server puts it in each request's
/// extensions.
#[derive(Clone)]
pub struct ConnectionBudget {
    semaphore: Arc<Semaphore>,
    total: usize,
}

impl ConnectionBudget {
    /// A connection budget of `total` bytes.
    pub fn new(total: usize) -> ConnectionBudget {
        let total = total.max(SMALL_MESSAGE);
        ConnectionBudget { semaphore: Arc::new(Semaphore::new(total)), total }
    }

    async fn acquire(&self, bytes: usize) -> OwnedSemaphorePermit {
        let n = permits(bytes.min(self.total));
        self.semaphore.clone().acquire_many_owned(n).await.expect("the budget's semaphore is never closed")
    }
}

/// What a response stream has in flight and when it last wrote any of it.
pub struct Progress {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last write (or of the last grant, when nothing was
    /// in flight before it).
    last: AtomicU64,
    epoch: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { in_flight: AtomicUsize::new(0), last: AtomicU64::new(0), epoch: Instant::now() }
    }
}

impl Progress {
    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// Bytes granted to the stream and not yet written.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When the stream counts as stalled if nothing more is written: `stall` after its last
    /// write. `None` while it has nothing waiting to be written.
    pub fn stall_deadline(&self, stall: Duration) -> Option<Instant> {
        if self.in_flight() == 0 {
            return None;
        }
        Some(self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed)) + stall)
    }
}

tokio::task_local! {
    /// The progress of the HTTP/2 stream whose task is running.
    static STREAM: Arc<Progress>;
}

/// Runs `f` as part of the stream whose progress is `progress` (the server wraps each stream's
/// task in this, so handlers find it with [`current`]).
pub fn scope<R>(progress: &Arc<Progress>, f: impl FnOnce() -> R) -> R {
    STREAM.sync_scope(progress.clone(), f)
}

/// The progress of the stream this task serves, when the server watches it.
pub fn current() -> Option<Arc<Progress>> {
    STREAM.try_with(Arc::clone).ok()
}

/// How one response stream takes budget: the worker's, its connection's, and its progress.
#[derive(Clone)]
pub struct Flow {
    budget: Arc<Budget>,
    connection: Option<ConnectionBudget>,
    progress: Option<Arc<Progress>>,
}

impl Flow {
    /// A stream's flow under `budget`, with its connection's budget and its progress when the
    /// server gave them.
    pub fn new(budget: Arc<Budget>, connection: Option<ConnectionBudget>, progress: Option<Arc<Progress>>) -> Flow {
        Flow { budget, connection, progress }
    }

    /// Waits until `bytes` are granted: the connection's budget first, then the worker's.
    pub async fn grant(&self, bytes: usize) -> Grant {
        let connection = match &self.connection {
            Some(c) => Some(c.acquire(bytes).await),
            None => None,
        };
        let worker = self.budget.acquire(bytes).await;
        if let Some(p) = &self.progress
            && p.in_flight.fetch_add(bytes, Ordering::Relaxed) == 0
        {
            p.touch();
        }
        crate::metrics::metrics().response_bytes_in_flight.add(bytes as i64);
        Grant(Arc::new(Granted { bytes, _permits: (worker, connection), progress: self.progress.clone() }))
    }
}

/// Budget granted to one message; given back when every part it was attached to is dropped.
#[derive(Clone)]
pub struct Grant(Arc<Granted>);

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant").field("bytes", &self.0.bytes).finish()
    }
}

struct Granted {
    bytes: usize,
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
    progress: Option<Arc<Progress>>,
}

impl Drop for Granted {
    fn drop(&mut self) {
        if let Some(p) = &self.progress {
            p.in_flight.fetch_sub(self.bytes, Ordering::Relaxed);
            p.touch();
        }
        crate::metrics::metrics().response_bytes_in_flight.sub(self.bytes as i64);
    }
}

/// A piece of a message that holds its grant, and marks progress when written and dropped.
struct Piece {
    bytes: Bytes,
    grant: Grant,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        if let Some(p) = &self.grant.0.progress {
            p.touch();
        }
    }
}

impl Grant {
    /// `bytes`, holding this grant until dropped (no copy).
    pub fn wrap(&self, bytes: Bytes) -> Bytes {
        Bytes::from_owner(Piece { bytes, grant: self.clone() })
    }

    /// `bytes` in pieces of at most [`PIECE`] bytes that hold this grant (no copy).
    pub fn attach(&self, bytes: Bytes, out: &mut Vec<Bytes>) {
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + PIECE).min(bytes.len());
            out.push(self.wrap(bytes.slice(at..end)));
            at = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grants_come_back_when_every_piece_is_dropped() {
        let budget = Arc::new(Budget::new(8 << 20));
        let progress = Arc::new(Progress::default());
        let flow = Flow::new(budget.clone(), Some(ConnectionBudget::new(4 << 20)), Some(progress.clone()));
        let grant = flow.grant(1 << 20).await;
        let mut pieces = Vec::new();
        grant.attach(Bytes::from(vec![7u8; 1 << 20]), &mut pieces);
        assert_eq!(pieces.len(), (1 << 20) / PIECE);
        assert!(pieces.iter().all(|p| p.len() == PIECE && p[0] == 7));
        drop(grant);
        assert_eq!(budget.in_flight(), 1 << 20);
        assert_eq!(progress.in_flight(), 1 << 20);
        assert!(progress.stall_deadline(Duration::from_secs(1)).is_some());
        pieces.pop();
        assert_eq!(budget.in_flight(), 1 << 20, "held until the last piece goes");
        pieces.clear();
        assert_eq!(budget.in_flight(), 0);
        assert_eq!(progress.stall_deadline(Duration::from_secs(1)), None);
    }

    #[tokio::test]
    async fn a_stream_waits_for_budget_and_small_messages_use_the_reserve() {
        let budget = Arc::new(Budget::new(8 << 20));
        let flow = Flow::new(budget.clone(), None, None);
        // Large messages take the bulk budget (8 MiB less a 1 MiB reserve).
        let held = flow.grant(7 << 20).await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), flow.grant(1 << 20)).await;
        assert!(waiting.is_err(), "a large message waits while the bulk budget is out");
        // A small one is served from the reserve.
        let small = tokio::time::timeout(Duration::from_millis(50), flow.grant(64 << 10)).await;
        assert!(small.is_ok(), "a small message does not wait");
        drop(held);
        tokio::time::timeout(Duration::from_millis(50), flow.grant(1 << 20)).await.expect("budget came back");
    }

    #[tokio::test]
    async fn a_connection_cannot_take_more_than_its_own_budget() {
        let budget = Arc::new(Budget::new(64 << 20));
        let connection = ConnectionBudget::new(4 << 20);
        let flow = Flow::new(budget.clone(), Some(connection.clone()), None);
        let _held = flow.grant(4 << 20).await;
        assert!(tokio::time::timeout(Duration::from_millis(50), flow.grant(1 << 20)).await.is_err());
        let other = Flow::new(budget, Some(ConnectionBudget::new(4 << 20)), None);
        assert!(tokio::time::timeout(Duration::from_millis(50), other.grant(1 << 20)).await.is_ok());
    }
}
