//! A bytes-bounded LRU of decoded results, per worker.
//!
//! Results are immutable, so an entry never goes stale: a hit is always the stored result, and
//! there is nothing to invalidate (a dropped handle's entry just ages out). Hits and misses are
//! counted for metrics and tests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use polars::prelude::DataFrame;

use crate::handle::Handle;

/// Decoded results, most recently used kept, at most `capacity` bytes.
pub struct ResultCache {
    capacity: u64,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Inner {
    entries: LruCache<Handle, (DataFrame, u64)>,
    bytes: u64,
}

impl ResultCache {
    /// A cache of at most `capacity` bytes (0 disables it).
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner { entries: LruCache::unbounded(), bytes: 0 }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached frame, counting a hit or a miss.
    pub fn get(&self, handle: &Handle) -> Option<DataFrame> {
        let found = self.inner.lock().expect("cache lock").entries.get(handle).map(|(f, _)| f.clone());
        let m = crate::metrics::metrics();
        let (counter, exported) =
            if found.is_some() { (&self.hits, &m.cache_hits) } else { (&self.misses, &m.cache_misses) };
        counter.fetch_add(1, Ordering::Relaxed);
        exported.inc();
        found
    }

    /// Whether a frame is cached, without counting a hit or a miss or refreshing it.
    pub fn contains(&self, handle: &Handle) -> bool {
        self.inner.lock().expect("cache lock").entries.contains(handle)
    }

    /// Keeps a frame, evicting the least recently used until it fits. Frames larger than the
    /// whole cache are not kept.
    pub fn insert(&self, handle: Handle, frame: DataFrame) {
        let size = frame.estimated_size() as u64;
        if size > self.capacity {
            return;
        }
        let mut inner = self.inner.lock().expect("cache lock");
        if let Some((_, old)) = inner.entries.put(handle, (frame, size)) {
            inner.bytes -= old;
        }
        inner.bytes += size;
        while inner.bytes > self.capacity {
            match inner.entries.pop_lru() {
                Some((_, (_, evicted))) => inner.bytes -= evicted,
                None => break,
            }
        }
    }

    /// The byte budget.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Cache hits so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Cache misses so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().expect("cache lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use super::*;

    #[test]
    fn evicts_least_recently_used_to_stay_within_bytes() {
        let frame = df!("a" => (0..1000i64).collect::<Vec<_>>()).unwrap();
        let size = frame.estimated_size() as u64;
        let cache = ResultCache::new(size * 2);
        let (a, b, c) = (Handle::random(), Handle::random(), Handle::random());
        cache.insert(a.clone(), frame.clone());
        cache.insert(b.clone(), frame.clone());
        assert!(cache.get(&a).is_some(), "a is now the most recent");
        cache.insert(c.clone(), frame.clone());
        assert!(cache.get(&b).is_none(), "b was least recently used");
        assert!(cache.get(&a).is_some() && cache.get(&c).is_some());
        assert!(cache.bytes() <= size * 2);
        assert_eq!((cache.hits(), cache.misses()), (3, 1));
    }
}
