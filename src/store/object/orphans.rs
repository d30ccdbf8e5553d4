//! What interrupted writes leave behind: staging files of a killed worker, data whose meta never
//! arrived, and old scratch copies; removed by the sweep once older than the orphan grace.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::{ObjectStateStore, store_error};
use crate::error::Result;

impl ObjectStateStore {
    /// Deletes staging files and result data without metadata last touched before `cutoff`: what
    /// a worker killed mid-write leaves behind. Returns how many were removed.
    pub(super) fn orphans(&self, cutoff: chrono::DateTime<Utc>) -> Result<usize> {
        let mut removed = 0;
        // Scratch copies of remote results: copied again when needed.
        if let Some(Ok(entries)) = self.scratch.as_ref().map(std::fs::read_dir) {
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| DateTime::<Utc>::from(t) < cutoff)
                    .unwrap_or(false);
                if old {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // Local backend: staging files `<name>#<digits>` of uploads that never completed.
        if let Some(dir) = &self.local_dir {
            let results = dir.join("results");
            if let Ok(entries) = std::fs::read_dir(&results) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    let staged = name
                        .split_once('#')
                        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(|t| DateTime::<Utc>::from(t) < cutoff)
                        .unwrap_or(false);
                    if staged && old && std::fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        // Any backend: data whose meta never arrived.
        let prefix = self.root.clone().join("results");
        let objects: Vec<_> = self.block_on(self.store.list(Some(&prefix)).collect::<Vec<_>>());
        let mut metas = std::collections::HashSet::new();
        let mut data = Vec::new();
        for object in objects {
            let object = object.map_err(|e| store_error("list results", e))?;
            let Some(name) = object.location.filename() else { continue };
            if let Some(stem) = name.strip_suffix(".json") {
                metas.insert(stem.to_string());
            } else if let Some(stem) = name.strip_suffix(".arrow") {
                data.push((stem.to_string(), object.last_modified, object.location.clone()));
            }
        }
        for (stem, modified, location) in data {
            if !metas.contains(&stem) && modified < cutoff {
                match self.block_on(self.store.delete(&location)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                    Err(e) => return Err(store_error("delete an orphan", e)),
                }
            }
        }
        Ok(removed)
    }
}
