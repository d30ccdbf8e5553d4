//! Expiry: deleting results past their expiry and what interrupted writes left behind.
//!
//! Every worker sweeps on a timer, and sweeps may run on every worker at once: a result another
//! sweep deleted first is not an error, and a reader that already opened a result keeps reading it
//! (files stay readable after unlink; object GETs are independent). A result is deleted one sweep
//! interval after it expires, so reads opened while it was live get that long to finish, also on
//! stores that cannot read a deleted object.

use crate::engine::exec;
use crate::engine::results::Catalog;
use crate::error::Result;

/// How long expired results and interrupted writes are kept before a sweep deletes them.
pub struct Sweep {
    orphan_grace: chrono::Duration,
    read_grace: chrono::Duration,
}

impl Sweep {
    /// A sweep that keeps interrupted writes for `orphan_grace` and expired results for
    /// `read_grace` (one sweep interval).
    pub fn new(orphan_grace: chrono::Duration, read_grace: chrono::Duration) -> Sweep {
        Sweep { orphan_grace, read_grace }
    }

    /// Deletes every expired, unpinned result and the leftovers of interrupted uploads; returns
    /// how many results and orphans were deleted.
    pub async fn run(&self, catalog: &Catalog) -> Result<(usize, usize)> {
        let store = catalog.store();
        let now = catalog.now();
        let (cutoff, orphan_cutoff) = (now - self.read_grace, now - self.orphan_grace);
        exec::blocking(move || {
            let mut deleted = 0;
            for meta in store.list()? {
                if !meta.is_live(cutoff) && store.delete(&meta.handle)? {
                    deleted += 1;
                }
            }
            let orphans = store.remove_orphans(orphan_cutoff)?;
            let m = crate::metrics::metrics();
            m.gc_deleted.with_label_values(&["expired"]).inc_by(deleted as u64);
            m.gc_deleted.with_label_values(&["orphan"]).inc_by(orphans as u64);
            Ok((deleted, orphans))
        })
        .await
    }
}
