//! Where results live: the [`StateStore`] trait and its implementations.
//!
//! A result is an immutable frame plus its [`ResultMeta`]. The store knows keys and paths and
//! nothing of expiry rules or operations; the catalog decides what is live. A store is three
//! traits: [`ResultStore`] (results by handle), [`DocumentStore`] (small documents under typed
//! keys) and [`FileCapabilities`] (what only stores that keep files can do). Methods are blocking
//! and are called from the blocking pool. A new backend implements the three and is chosen in
//! [`open`].

/// A bytes-bounded LRU of decoded results, per worker.
pub mod cache;
mod docs;
/// Checks on Arrow IPC from clients and the store, before arrow-rs decodes it.
pub mod ipc;
mod memory;
pub(crate) mod object;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::handle::Handle;

pub use docs::{DocKey, DocSet};
pub use memory::MemoryStore;
pub use object::ObjectStateStore;

/// One column of a result's schema, as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Polars data type, e.g. `i64`, `str`, `datetime[μs, UTC]`.
    #[serde(rename = "type")]
    pub dtype: String,
}

/// How a result was produced: enough to explain it and, later, to recompute it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Operation name (`upload` for DoPut).
    pub op: String,
    /// The operation's canonical parameters.
    pub params: serde_json::Value,
    /// Handles the operation read.
    pub inputs: Vec<String>,
}

/// Everything known about a stored result besides its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMeta {
    /// The result's handle.
    pub handle: Handle,
    /// Name given at upload, if any.
    pub name: Option<String>,
    /// Column names and types.
    pub schema: Vec<ColumnInfo>,
    /// Row count.
    pub num_rows: u64,
    /// Stored size in bytes (frame size in memory, file size on disk).
    pub num_bytes: u64,
    /// When the result was created.
    pub created_at: DateTime<Utc>,
    /// When the result expires unless pinned or renewed.
    pub expires_at: DateTime<Utc>,
    /// A pinned result never expires.
    pub pinned: bool,
    /// The operation and inputs that produced it.
    pub lineage: Lineage,
    /// Routing key shared by a chain of results (the handle of the chain's first result); clients
    /// send it as a header so a load balancer keeps the chain on one worker.
    #[serde(default)]
    pub affinity: String,
    /// The tenant that made the result; only it can see the result.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Checksums of the stored file, verified on every read (stores that keep files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<Checksums>,
}

/// CRC-32 checksums of a stored Arrow IPC file, by segment: the first segment runs from the start
/// of the file through the first record batch, each next one holds one record batch, and the
/// last one the footer. A reader checks the segment holding each block before decoding it, so a
/// truncated or altered file is never decoded, let alone served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    /// End offset of each segment; the last is the file's size.
    pub ends: Vec<u64>,
    /// CRC-32 of each segment.
    pub crc32: Vec<u32>,
}

impl Checksums {
    /// The index and byte range of the segment holding `range`, if one holds it whole.
    pub fn segment(&self, range: &std::ops::Range<u64>) -> Option<(usize, std::ops::Range<u64>)> {
        let i = self.ends.partition_point(|&end| end < range.end);
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let end = *self.ends.get(i)?;
        (start <= range.start && range.end <= end).then_some((i, start..end))
    }

    /// Whether `bytes` are segment `i` as written.
    pub fn verify(&self, i: usize, bytes: &[u8]) -> bool {
        self.crc32.get(i).is_some_and(|&crc| crc32fast::hash(bytes) == crc)
    }

    /// The file's size as written.
    pub fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }
}

impl ResultMeta {
    /// Whether the result can still be served at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.pinned || self.expires_at > now
    }
}

/// A stored result read batch by batch.
pub struct BatchStream {
    /// Schema of every batch (sent first, also for zero rows).
    pub schema: SchemaRef,
    /// The batches, read lazily.
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
}

/// A stored result as the Arrow IPC messages of its record batches, checked but not decoded, for
/// serving as they are.
pub struct IpcStream {
    /// Schema of every batch (sent first, also for zero rows).
    pub schema: SchemaRef,
    /// The messages, read lazily.
    pub messages: Box<dyn MessageReader>,
}

/// Stored messages read one at a time, each one's size known before it is read (from the file's
/// footer), so a reader can wait for memory before it reads.
pub trait MessageReader: Iterator<Item = Result<IpcMessage>> + Send {
    /// Bytes of the next message; `None` when none is left.
    fn next_size(&self) -> Option<usize>;
}

/// One encoded record batch: its flatbuffer header and its body, as FlightData carries them.
pub struct IpcMessage {
    /// The IPC message flatbuffer.
    pub header: bytes::Bytes,
    /// The buffers the header points into.
    pub body: bytes::Bytes,
}

/// Results: each an immutable frame and its [`ResultMeta`], under its handle.
pub trait ResultStore: Send + Sync + 'static {
    /// Whether calls may wait on I/O, so that the engine makes them on the blocking pool. A store
    /// whose every call is a quick in-memory operation says `false` and is called in place.
    fn blocks(&self) -> bool {
        true
    }

    /// Stores a result under `meta.handle`, replacing any earlier one, and returns the stored meta
    /// with `num_bytes` filled in. Readers never see a partial result.
    fn put(&self, frame: &DataFrame, meta: ResultMeta) -> Result<ResultMeta>;

    /// The meta of a stored result, live or expired; `None` when there is none.
    fn meta(&self, handle: &Handle) -> Result<Option<ResultMeta>>;

    /// Replaces a stored result's meta (pin, unpin, renew).
    fn write_meta(&self, meta: &ResultMeta) -> Result<()>;

    /// The whole result as a frame.
    fn load(&self, handle: &Handle) -> Result<DataFrame>;

    /// The result as a lazy sequence of record batches.
    fn open_batches(&self, handle: &Handle) -> Result<BatchStream>;

    /// The result's Arrow schema (opening a stored file reads only its footer).
    fn schema(&self, handle: &Handle) -> Result<SchemaRef> {
        Ok(self.open_batches(handle)?.schema)
    }

    /// Deletes a result; `false` when there was nothing to delete. Safe to race.
    fn delete(&self, handle: &Handle) -> Result<bool>;

    /// The meta of every stored result.
    fn list(&self) -> Result<Vec<ResultMeta>>;
}

/// Small documents under typed keys ([`DocKey`]): names, job records, the queue, leases.
pub trait DocumentStore: Send + Sync + 'static {
    /// Writes a document. With `create_only`, writes only if absent and returns `false` when it
    /// already existed: the atomic create-if-absent that leases rely on.
    fn put_doc(&self, key: &DocKey, bytes: Vec<u8>, create_only: bool) -> Result<bool>;

    /// A document, or `None`.
    fn get_doc(&self, key: &DocKey) -> Result<Option<Vec<u8>>>;

    /// The keys of the documents in `set`.
    fn list_docs(&self, set: &DocSet) -> Result<Vec<DocKey>>;

    /// Deletes a document; absent is not an error.
    fn delete_doc(&self, key: &DocKey) -> Result<()>;
}

/// What only stores that keep files can do, each asked for by one caller; the defaults are what
/// a store without files answers.
pub trait FileCapabilities {
    /// DoGet: the result as its stored IPC messages, when the store keeps them in a form that can
    /// be sent without decoding; `None` means read it with [`ResultStore::open_batches`].
    fn open_messages(&self, handle: &Handle) -> Result<Option<IpcStream>> {
        let _ = handle;
        Ok(None)
    }

    /// Operation inputs: a lazy Polars scan of the result, when the store can offer one (a local
    /// file that Polars reads itself, with projection and predicate pushdown, so an operation does
    /// not need the whole input in memory); `None` means load it whole.
    fn scan(&self, handle: &Handle) -> Result<Option<polars::prelude::LazyFrame>> {
        let _ = handle;
        Ok(None)
    }

    /// SQL: the object store results live in, for DataFusion to read them itself; `None` when
    /// results are not files (the memory store).
    fn object_store(&self) -> Option<std::sync::Arc<dyn object_store::ObjectStore>> {
        None
    }

    /// SQL: the table source of a result, an Arrow IPC file in [`FileCapabilities::object_store`].
    fn table_file(&self, handle: &Handle) -> Option<TableFile> {
        let _ = handle;
        None
    }

    /// Recovery: whether a result's data was found damaged and moved aside.
    fn damaged(&self, handle: &Handle) -> bool {
        let _ = handle;
        false
    }

    /// The sweep: removes what interrupted writes left behind, last touched before `cutoff`;
    /// returns how many.
    fn remove_orphans(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        let _ = cutoff;
        Ok(0)
    }
}

/// Where a stored result's Arrow IPC file is, for a reader that opens it itself.
#[derive(Debug, Clone)]
pub struct TableFile {
    /// The file's location in the store's object store.
    pub path: object_store::path::Path,
    /// The file name's extension, for readers that list by it.
    pub extension: &'static str,
}

/// A whole store: results, documents and file capabilities.
pub trait StateStore: ResultStore + DocumentStore + FileCapabilities {}

impl<T: ResultStore + DocumentStore + FileCapabilities> StateStore for T {}

/// An object store's credentials and endpoints, as `(variable, value)`. Its `Debug` shows the
/// variables' names only, so a logged configuration never carries a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CloudOptions(pub Vec<(String, String)>);

impl std::fmt::Debug for CloudOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

impl std::ops::Deref for CloudOptions {
    type Target = [(String, String)];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The validated store choice (`config` reads it from the environment).
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Results in process.
    Memory,
    /// Results as files under this directory.
    Directory(std::path::PathBuf),
    /// Results in an object store at `url`, opened with `options`: the cloud's usual
    /// environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`), read here and nowhere else.
    Url {
        /// `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix` or `file:///path`.
        url: String,
        /// Credentials and endpoints.
        options: CloudOptions,
    },
}

/// Opens the store `config` selects: the one place a store is built from configuration. A remote
/// store copies results it scans lazily into `scratch_dir`.
pub fn open(
    config: &StoreConfig,
    scratch_dir: &std::path::Path,
    runtime: tokio::runtime::Handle,
) -> Result<std::sync::Arc<dyn StateStore>> {
    Ok(match config {
        StoreConfig::Memory => std::sync::Arc::new(MemoryStore::new()),
        StoreConfig::Directory(dir) => std::sync::Arc::new(ObjectStateStore::open_dir(dir, runtime)?),
        StoreConfig::Url { url, options } => std::sync::Arc::new(
            ObjectStateStore::open_url(url, options, runtime)?.with_scratch_dir(scratch_dir.to_path_buf()),
        ),
    })
}

/// Column names and Polars types of a frame.
pub fn describe_schema(frame: &DataFrame) -> Vec<ColumnInfo> {
    frame.schema().iter().map(|(name, dtype)| ColumnInfo { name: name.to_string(), dtype: dtype.to_string() }).collect()
}

#[cfg(test)]
mod tests;
