//! Local copies of remote results, for Polars to scan lazily: Polars reads only local files
//! itself, with projection and predicate pushdown, so a large input from S3 is copied here once
//! (results are immutable) instead of being loaded whole into memory.

use std::io::{self, Write};
use std::path::PathBuf;

use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::file::{Source, VerifiedFile, damaged_file};
use super::{ObjectStateStore, store_error};
use crate::error::{Error, Result};
use crate::handle::Handle;

impl ObjectStateStore {
    /// Copies a remote result to the scratch directory, streaming (never whole in memory);
    /// results are immutable, so a copy made earlier is as good as a new one.
    pub(super) fn scratch_copy(&self, handle: &Handle) -> Result<Option<PathBuf>> {
        let Some(scratch) = &self.scratch else { return Ok(None) };
        let dest = scratch.join(format!("{handle}.arrow"));
        if dest.exists() {
            return Ok(Some(dest));
        }
        let scratch_error = |e: io::Error| Error::store("scratch directory: cannot copy a result", e);
        std::fs::create_dir_all(scratch).map_err(scratch_error)?;
        let part = scratch.join(format!("{handle}.{}.part", uuid::Uuid::new_v4().simple()));
        let copied = self.block_on(async {
            let mut stream = match self.store.get(&self.path(handle, "arrow")).await {
                Ok(got) => got.into_stream(),
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(store_error("read a result", e)),
            };
            let mut file = std::fs::File::create(&part).map_err(scratch_error)?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| store_error("read a result", e))?;
                file.write_all(&chunk).map_err(scratch_error)?;
                crate::metrics::metrics().store_read.inc_by(chunk.len() as u64);
            }
            Ok(true)
        });
        match copied {
            Ok(true) => {
                std::fs::rename(&part, &dest).map_err(scratch_error)?;
                Ok(Some(dest))
            }
            Ok(false) => Ok(None),
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                Err(e)
            }
        }
    }

    /// A lazy Polars scan of a result's file: the local backend's own file, or a remote
    /// result's scratch copy; every byte is checked first.
    pub(super) fn lazy_scan(&self, handle: &Handle) -> Result<Option<polars::prelude::LazyFrame>> {
        use polars::prelude::{IpcScanOptions, LazyFrame, PlRefPath, UnifiedScanArgs};
        let path = match &self.local_dir {
            Some(dir) => Self::local_file(dir, handle),
            None => match self.scratch_copy(handle)? {
                Some(copy) => copy,
                None => return Ok(None),
            },
        };
        // A missing file is loaded the usual way, which recovers it from lineage.
        let Some(text) = path.to_str().filter(|_| path.exists()) else { return Ok(None) };
        // Polars reads the file itself: check every byte first. A file without checksums (from
        // before they existed) is read through arrow-rs instead, which refuses what it cannot
        // decode where Polars' reader may panic.
        let Some(checksums) = crate::store::ResultStore::meta(self, handle)?.and_then(|m| m.checksums) else {
            return Ok(None);
        };
        let checksums = Some(checksums);
        let file = std::fs::File::open(&path).map_err(|e| Error::store("state store: cannot open a result", e))?;
        if let Err(e) =
            VerifiedFile::open(Source::File(file, path.clone()), handle, checksums).and_then(|f| f.verify_all())
        {
            if self.local_dir.is_none() {
                // A bad scratch copy is fetched again next time; the stored object is checked then.
                let _ = std::fs::remove_file(damaged_file(&path));
            }
            return Err(e);
        }
        let lf = LazyFrame::scan_ipc(PlRefPath::new(text), IpcScanOptions::default(), UnifiedScanArgs::default())?;
        Ok(Some(lf))
    }
}
