//! The shared store: results as Arrow IPC files in any `object_store` backend (a local directory,
//! S3, Azure Blob, Google Cloud Storage), so every worker on the store serves every handle.
//!
//! Layout under the store's prefix:
//!
//! ```text
//! results/<handle>.arrow   the result, Arrow IPC file format
//! results/<handle>.json    its ResultMeta; written only after the .arrow object is complete
//! ```
//!
//! Writes stream: the IPC writer fills a buffer that becomes a single PUT for small results and a
//! multipart upload for large ones, so a result is never whole in memory twice and never visible
//! before it is complete (an object appears only when its PUT or multipart upload completes; the
//! local backend stages and renames). Reads go by range: the IPC footer first, then one batch per
//! ranged GET, decoded with arrow's `FileDecoder`. The meta's first write is create-if-absent where
//! the backend supports it; when two workers race on the same deterministic result both wrote
//! identical bytes, so the loser just reads the winner's meta.
//!
//! The trait is blocking (the engine calls it from the blocking pool); each call drives the async
//! client on the runtime it was opened on.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::ipc::writer::FileWriter;
use chrono::Utc;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use polars::prelude::DataFrame;
use tokio::runtime::Handle as Runtime;

mod file;
mod orphans;
mod scratch;

use super::{
    BatchStream, DocKey, DocSet, DocumentStore, FileCapabilities, IpcStream, ResultMeta, ResultStore, TableFile,
};
use crate::convert;
use crate::error::{Error, Result};
use crate::handle::Handle;
use file::{ObjectWriter, Source, VerifiedFile};

/// Results in an object store.
pub struct ObjectStateStore {
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    /// The directory behind a local backend, for removing staging files a killed worker left.
    local_dir: Option<PathBuf>,
    /// Local disk where remote results are copied for Polars to scan lazily.
    scratch: Option<PathBuf>,
    runtime: Runtime,
}

/// An object store failure by its kind: a missing object is NOT_FOUND; credentials the store
/// refuses, a path or feature it does not take, are the worker's configuration (INTERNAL, not
/// worth a retry); a write that lost a race with another worker, a full backend
/// ([`Error::StoreFull`]) and an unreachable store are UNAVAILABLE, which a retry can get past.
pub(crate) fn store_error(what: &str, err: object_store::Error) -> Error {
    store_failure(what, &err).unwrap_or_else(|| Error::store(format!("state store: cannot {what}"), err))
}

/// [`store_error`] by reference, for an error that can only be looked at (one DataFusion still
/// shares); `None` is a generic failure (the network, the backend), which the caller reports as
/// [`Error::Store`] with the source it has.
pub(crate) fn store_failure(what: &str, err: &object_store::Error) -> Option<Error> {
    use object_store::Error as E;
    Some(match err {
        E::NotFound { .. } => Error::NotFound(format!("{what}: not found")),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            tracing::error!(error = %err, what, "the state store refused the worker's credentials");
            Error::Internal(format!("state store refused the worker's credentials: cannot {what}"))
        }
        E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => {
            tracing::error!(error = %err, what, "the state store does not support this call");
            Error::Internal(format!("state store does not support this: cannot {what}"))
        }
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            Error::Unavailable(format!("state store: another worker changed it first; cannot {what}"))
        }
        // Generic failures (the network, the backend, a full disk), and kinds newer than these.
        other if crate::error::out_of_space(other) => {
            tracing::warn!(error = %other, what, "state store is full");
            Error::StoreFull(format!("state store is full: cannot {what}"))
        }
        _ => return None,
    })
}

impl ObjectStateStore {
    /// A store over `store` under `root`; `local_dir` names the directory of a local backend.
    pub fn new(store: Arc<dyn ObjectStore>, root: ObjectPath, local_dir: Option<PathBuf>, runtime: Runtime) -> Self {
        Self { store, root, local_dir, scratch: None, runtime }
    }

    /// Where remote results are copied to be scanned lazily; without one they are loaded whole.
    pub fn with_scratch_dir(mut self, scratch: PathBuf) -> Self {
        self.scratch = Some(scratch);
        self
    }

    /// Opens a local directory (created if missing) as a store.
    pub fn open_dir(dir: &std::path::Path, runtime: Runtime) -> Result<Self> {
        std::fs::create_dir_all(dir.join("results"))
            .map_err(|e| Error::store("state store: cannot create the directory", e))?;
        let dir = dir.canonicalize().map_err(|e| Error::store("state store: cannot open the directory", e))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| store_error("open the directory", e))?;
        Ok(Self::new(Arc::new(store), ObjectPath::default(), Some(dir), runtime))
    }

    /// Opens a store from a URL (`s3://bucket/prefix`, `az://container/prefix`,
    /// `gs://bucket/prefix`, `file:///path`); `options` are its credentials and endpoints, named
    /// as each cloud's environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`; see
    /// [`crate::store::StoreConfig::Url`]).
    pub fn open_url(url: &str, options: &[(String, String)], runtime: Runtime) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid(format!("POLARWAY_STATE_URL: `{url}` is not a URL: {e}")))?;
        if parsed.scheme() == "file" {
            let dir = parsed
                .to_file_path()
                .map_err(|_| Error::invalid(format!("POLARWAY_STATE_URL: `{url}` is not a local path")))?;
            return Self::open_dir(&dir, runtime);
        }
        let (store, root) = object_store::parse_url_opts(&parsed, options.iter().cloned())
            .map_err(|e| Error::invalid(format!("POLARWAY_STATE_URL: `{url}`: {e}")))?;
        Ok(Self::new(Arc::from(store), root, None, runtime))
    }

    /// A result's file under a local backend's directory.
    fn local_file(dir: &std::path::Path, handle: &Handle) -> PathBuf {
        dir.join("results").join(format!("{handle}.arrow"))
    }

    /// A result's file, opened for checked reads with the checksums its meta records.
    fn verified(&self, handle: &Handle) -> Result<VerifiedFile> {
        let checksums = self.meta(handle)?.and_then(|m| m.checksums);
        VerifiedFile::open(self.source(handle)?, handle, checksums)
    }

    /// Where to read a result's file from.
    fn source(&self, handle: &Handle) -> Result<Source> {
        if let Some(dir) = &self.local_dir {
            let path = Self::local_file(dir, handle);
            return match std::fs::File::open(&path) {
                Ok(file) => Ok(Source::File(file, path)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Err(Error::NotFound(format!("handle {handle}: stored data not found")))
                }
                Err(e) => Err(Error::store("state store: cannot open a result", e)),
            };
        }
        let path = self.path(handle, "arrow");
        let size = match self.block_on(self.store.head(&path)) {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound(format!("handle {handle}: stored data not found")));
            }
            Err(e) => return Err(store_error("read a result", e)),
        };
        Ok(Source::Object { store: self.store.clone(), path, runtime: self.runtime.clone(), size })
    }

    fn path(&self, handle: &Handle, ext: &str) -> ObjectPath {
        self.root.clone().join("results").join(format!("{handle}.{ext}").as_str())
    }

    /// Documents live beside `results/`, under their own directories; their paths come from
    /// [`DocKey`] and [`DocSet`], made of validated ids and names.
    fn doc_path(&self, key: &str) -> ObjectPath {
        key.split('/').fold(self.root.clone(), |path, part| path.join(part))
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

impl ResultStore for ObjectStateStore {
    fn put(&self, frame: &DataFrame, mut meta: ResultMeta) -> Result<ResultMeta> {
        let (schema, batches) = convert::frame_to_batches(frame)?;
        let mut out = ObjectWriter::new(self, self.path(&meta.handle, "arrow"));
        let written = (|| -> Result<()> {
            let mut writer = FileWriter::try_new(&mut out, &schema)?;
            for batch in &batches {
                for part in convert::split_batch(batch, convert::BATCH_TARGET_BYTES) {
                    writer.write(&part)?;
                    writer.flush()?;
                }
            }
            writer.finish()?;
            writer.flush()?;
            Ok(())
        })();
        if let Err(e) = written {
            out.abort();
            return Err(e);
        }
        let checksums = out.finish()?;
        meta.num_bytes = checksums.size();
        meta.checksums = Some(checksums);
        crate::metrics::metrics().store_written.inc_by(meta.num_bytes);
        // The meta appears last: until then the handle does not exist for any worker.
        let body = PutPayload::from(serde_json::to_vec(&meta).expect("meta serialises"));
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.block_on(self.store.put_opts(&self.path(&meta.handle, "json"), body.clone(), create)) {
            Ok(_) => Ok(meta),
            // Another worker finished the same result first, or an expired one is being
            // recomputed: its data is the same, so the meta is replaced.
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.write_meta(&meta)?;
                Ok(meta)
            }
            // A backend without conditional create: a plain overwrite is equally correct here.
            Err(object_store::Error::NotImplemented { .. }) => {
                self.write_meta(&meta)?;
                Ok(meta)
            }
            Err(e) => Err(store_error("write metadata", e)),
        }
    }

    fn meta(&self, handle: &Handle) -> Result<Option<ResultMeta>> {
        let bytes = match self.block_on(async { self.store.get(&self.path(handle, "json")).await?.bytes().await }) {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error("read metadata", e)),
        };
        let meta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("stored metadata of {handle} is unreadable: {e}")))?;
        Ok(Some(meta))
    }

    fn write_meta(&self, meta: &ResultMeta) -> Result<()> {
        let body = PutPayload::from(serde_json::to_vec(meta).expect("meta serialises"));
        self.block_on(self.store.put(&self.path(&meta.handle, "json"), body))
            .map_err(|e| store_error("write metadata", e))?;
        Ok(())
    }

    fn load(&self, handle: &Handle) -> Result<DataFrame> {
        let BatchStream { schema, batches } = self.open_batches(handle)?;
        let batches = batches.collect::<Result<Vec<_>>>()?;
        convert::batches_to_frame(&schema, &batches)
    }

    fn open_batches(&self, handle: &Handle) -> Result<BatchStream> {
        self.verified(handle)?.into_batches()
    }

    fn delete(&self, handle: &Handle) -> Result<bool> {
        let existed = match self.block_on(self.store.delete(&self.path(handle, "json"))) {
            Ok(()) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(store_error("delete a result", e)),
        };
        let _ = self.block_on(self.store.delete(&self.path(handle, "arrow.damaged")));
        match self.block_on(self.store.delete(&self.path(handle, "arrow"))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(existed),
            Err(e) => Err(store_error("delete a result", e)),
        }
    }

    fn list(&self) -> Result<Vec<ResultMeta>> {
        let prefix = self.root.clone().join("results");
        let objects: Vec<_> = self.block_on(self.store.list(Some(&prefix)).collect::<Vec<_>>());
        let mut metas = Vec::new();
        for object in objects {
            let object = object.map_err(|e| store_error("list results", e))?;
            let Some(stem) = object.location.filename().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let Ok(handle) = Handle::parse(stem) else { continue };
            // A result deleted between listing and reading is simply gone.
            if let Some(meta) = self.meta(&handle)? {
                metas.push(meta);
            }
        }
        Ok(metas)
    }
}

impl DocumentStore for ObjectStateStore {
    fn put_doc(&self, key: &DocKey, bytes: Vec<u8>, create_only: bool) -> Result<bool> {
        let path = self.doc_path(&key.path());
        let mode = if create_only { PutMode::Create } else { PutMode::Overwrite };
        let options = PutOptions { mode, ..Default::default() };
        match self.block_on(self.store.put_opts(&path, PutPayload::from(bytes), options)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error("write a document", e)),
        }
    }

    fn get_doc(&self, key: &DocKey) -> Result<Option<Vec<u8>>> {
        let path = self.doc_path(&key.path());
        match self.block_on(async { self.store.get(&path).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error("read a document", e)),
        }
    }

    fn list_docs(&self, set: &DocSet) -> Result<Vec<DocKey>> {
        let dir = self.doc_path(&set.dir());
        let objects: Vec<_> = self.block_on(self.store.list(Some(&dir)).collect::<Vec<_>>());
        let mut files = Vec::new();
        for object in objects {
            let object = object.map_err(|e| store_error("list documents", e))?;
            // Only the set's own directory: `list` also walks below it.
            if object.location.prefix_match(&dir).is_some_and(|mut rest| rest.nth(1).is_none()) {
                files.extend(object.location.filename().map(str::to_string));
            }
        }
        Ok(set.keys(files.iter().map(String::as_str)))
    }

    fn delete_doc(&self, key: &DocKey) -> Result<()> {
        match self.block_on(self.store.delete(&self.doc_path(&key.path()))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error("delete a document", e)),
        }
    }
}

impl FileCapabilities for ObjectStateStore {
    fn open_messages(&self, handle: &Handle) -> Result<Option<IpcStream>> {
        self.verified(handle)?.into_messages()
    }

    fn scan(&self, handle: &Handle) -> Result<Option<polars::prelude::LazyFrame>> {
        self.lazy_scan(handle)
    }

    fn object_store(&self) -> Option<Arc<dyn ObjectStore>> {
        Some(self.store.clone())
    }

    fn table_file(&self, handle: &Handle) -> Option<TableFile> {
        Some(TableFile { path: self.path(handle, "arrow"), extension: ".arrow" })
    }

    fn damaged(&self, handle: &Handle) -> bool {
        self.block_on(self.store.head(&self.path(handle, "arrow.damaged"))).is_ok()
    }

    fn remove_orphans(&self, cutoff: chrono::DateTime<Utc>) -> Result<usize> {
        self.orphans(cutoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_backend_is_resource_exhausted_and_other_failures_unavailable() {
        let full = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(io::Error::other(io::Error::from(io::ErrorKind::StorageFull))),
        };
        let err = store_error("write a result", full);
        assert!(matches!(err, Error::StoreFull(_)), "{err:?}");
        assert_eq!(err.to_string(), "state store is full: cannot write a result");

        let refused = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(io::Error::from(io::ErrorKind::PermissionDenied)),
        };
        let err = store_error("write a result", refused);
        assert!(matches!(err, Error::Store { .. }), "a refusing disk: {err:?}");
        assert!(err.chain().contains("permission denied"), "the cause is kept for the log: {}", err.chain());
        assert!(!err.to_string().contains("permission"), "and not sent: {err}");
        let denied = object_store::Error::PermissionDenied { path: "results/x".into(), source: "403".into() };
        assert!(matches!(store_error("write a result", denied), Error::Internal(_)), "credentials are configuration");
        let raced = object_store::Error::Precondition { path: "results/x".into(), source: "412".into() };
        assert!(matches!(store_error("write a result", raced), Error::Unavailable(_)), "a lost race is retried");
    }
}
