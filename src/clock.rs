//! The time that expiry, leases, sweeps and quotas are measured against.
//!
//! Every reading of "now" in the worker goes through a [`Clock`] held by the engine, so that
//! tests can move time forward ([`ManualClock::advance`]) instead of sleeping until a result
//! expires or a lease lapses. Timers that pace work (the sweep interval, the job poll) still run
//! on tokio's time: they decide when to look, the clock decides what has expired.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// A clock shared by the engine, the job queue and the store.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The wall clock plus an offset that only grows: time a test moves forward at will.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset_ms: AtomicI64,
}

impl ManualClock {
    /// A clock at the wall clock's time, shared.
    pub fn shared() -> Arc<ManualClock> {
        Arc::new(ManualClock::default())
    }

    /// A clock `behind` the wall clock, shared: what it stamps is already old to every other
    /// process (a `gc --once` run, another worker on the wall clock).
    pub fn shared_behind(behind: Duration) -> Arc<ManualClock> {
        let ms = i64::try_from(behind.as_millis()).unwrap_or(i64::MAX);
        Arc::new(ManualClock { offset_ms: AtomicI64::new(-ms) })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_when_told() {
        let clock = ManualClock::shared();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() - before >= chrono::Duration::seconds(3600));
    }
}
