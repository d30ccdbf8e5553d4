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

use std::io::{self, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileDecoder;
use arrow::ipc::writer::FileWriter;
use arrow::ipc::{Block, MetadataVersion, convert::fb_to_schema, reader::read_footer_length, root_as_footer};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};
use polars::prelude::DataFrame;
use tokio::runtime::Handle as Runtime;

use super::{BatchStream, Checksums, IpcMessage, IpcStream, ResultMeta, StateStore};
use crate::convert;
use crate::error::{Error, Result};
use crate::handle::Handle;

/// Results smaller than this go up in one PUT; larger ones in multipart chunks of this size.
const PART_BYTES: usize = 8 << 20;
/// The most one stored block may decode to. Results are written uncompressed in batches of a few
/// megabytes, so only a damaged or foreign file claims more.
const MAX_BLOCK_DECODED_BYTES: u64 = 1 << 30;
/// Multipart chunks in flight at once per upload.
const UPLOAD_CONCURRENCY: usize = 4;

/// Results in an object store.
pub struct ObjectStateStore {
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    /// The directory behind a local backend, for removing staging files a killed worker left.
    local_dir: Option<PathBuf>,
    /// Local disk where remote results are copied for Polars to scan lazily.
    scratch: PathBuf,
    runtime: Runtime,
}

/// An object store failure by its kind: a missing object is NOT_FOUND; credentials the store
/// refuses, a path or feature it does not take, are the worker's configuration (INTERNAL, not
/// worth a retry); a write that lost a race with another worker, a full backend
/// ([`Error::StoreFull`]) and an unreachable store are UNAVAILABLE, which a retry can get past.
pub(crate) fn store_error(what: &str, err: object_store::Error) -> Error {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => Error::NotFound(format!("{what}: not found")),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            tracing::error!(error = %err, what, "the state store refused the worker's credentials");
            Error::Internal(format!("state store refused the worker's credentials: cannot {what}"))
        }
        E::InvalidPath { .. } | E::NotSupported { .. } | E::NotImplemented { .. } | E::UnknownConfigurationKey { .. } => {
            tracing::error!(error = %err, what, "the state store does not support this call");
            Error::Internal(format!("state store does not support this: cannot {what}"))
        }
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            Error::Unavailable(format!("state store: another worker changed it first; cannot {what}"))
        }
        // Generic failures (the network, the backend, a full disk), and kinds newer than these.
        other => {
            tracing::warn!(error = %other, what, "state store call failed");
            if crate::error::out_of_space(&other) {
                Error::StoreFull(format!("state store is full: cannot {what}"))
            } else {
                Error::Unavailable(format!("state store: cannot {what}"))
            }
        }
    }
}

impl ObjectStateStore {
    /// A store over `store` under `root`; `local_dir` names the directory of a local backend.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        root: ObjectPath,
        local_dir: Option<PathBuf>,
        runtime: Runtime,
    ) -> Self {
        let scratch = std::env::temp_dir().join("polarway-scratch");
        Self { store, root, local_dir, scratch, runtime }
    }

    /// Where remote results are copied to be scanned lazily (default: the system temp directory).
    pub fn with_scratch_dir(mut self, scratch: PathBuf) -> Self {
        self.scratch = scratch;
        self
    }

    /// Copies a remote result to the scratch directory, streaming (never whole in memory);
    /// results are immutable, so a copy made earlier is as good as a new one.
    fn scratch_copy(&self, handle: &Handle) -> Result<Option<PathBuf>> {
        let dest = self.scratch.join(format!("{handle}.arrow"));
        if dest.exists() {
            return Ok(Some(dest));
        }
        let scratch_error =
            |e: io::Error| Error::Unavailable(format!("scratch directory: {}", e.kind()));
        std::fs::create_dir_all(&self.scratch).map_err(scratch_error)?;
        let part = self.scratch.join(format!("{handle}.{}.part", uuid::Uuid::new_v4().simple()));
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

    /// Opens a local directory (created if missing) as a store.
    pub fn open_dir(dir: &std::path::Path, runtime: Runtime) -> Result<Self> {
        std::fs::create_dir_all(dir.join("results")).map_err(|e| {
            Error::Unavailable(format!("state store: cannot create the directory: {}", e.kind()))
        })?;
        let dir = dir.canonicalize().map_err(|e| {
            Error::Unavailable(format!("state store: cannot open the directory: {}", e.kind()))
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| store_error("open the directory", e))?;
        Ok(Self::new(Arc::new(store), ObjectPath::default(), Some(dir), runtime))
    }

    /// Opens a store from a URL (`s3://bucket/prefix`, `az://container/prefix`,
    /// `gs://bucket/prefix`, `file:///path`); `options` are its credentials and endpoints, named
    /// as each cloud's environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`; see
    /// [`crate::config::StoreConfig::Url`]).
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
                Err(e) => Err(Error::Unavailable(format!("state store: cannot open a result: {}", e.kind()))),
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

    /// Documents live beside `results/`, under their own directories (`jobs/`, `leases/`); keys are
    /// built by the worker from validated ids, never from client text.
    fn doc_path(&self, key: &str) -> ObjectPath {
        key.split('/').fold(self.root.clone(), |path, part| path.join(part))
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Deletes staging files and result data without metadata last touched before `cutoff`: what
    /// a worker killed mid-write leaves behind. Returns how many were removed.
    pub fn remove_orphans(&self, cutoff: chrono::DateTime<Utc>) -> Result<usize> {
        let mut removed = 0;
        // Scratch copies of remote results: copied again when needed.
        if let Ok(entries) = std::fs::read_dir(&self.scratch) {
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

/// A `Write` that turns into one PUT when small, or a multipart upload once past [`PART_BYTES`].
///
/// Every `flush` closes a checksum segment: the IPC writer is flushed after each record batch, so
/// segments end where batches end (see [`Checksums`]).
struct ObjectWriter<'a> {
    owner: &'a ObjectStateStore,
    path: ObjectPath,
    buffer: Vec<u8>,
    upload: Option<WriteMultipart>,
    written: u64,
    hasher: crc32fast::Hasher,
    checksums: Checksums,
}

impl<'a> ObjectWriter<'a> {
    fn new(owner: &'a ObjectStateStore, path: ObjectPath) -> Self {
        Self {
            owner,
            path,
            buffer: Vec::with_capacity(64 << 10),
            upload: None,
            written: 0,
            hasher: crc32fast::Hasher::new(),
            checksums: Checksums { ends: Vec::new(), crc32: Vec::new() },
        }
    }

    /// Ends the current checksum segment, if it holds anything.
    fn close_segment(&mut self) {
        if self.checksums.size() < self.written {
            let hasher = std::mem::replace(&mut self.hasher, crc32fast::Hasher::new());
            self.checksums.ends.push(self.written);
            self.checksums.crc32.push(hasher.finalize());
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        // Parts upload as tasks on the store's runtime.
        let _context = self.owner.runtime.enter();
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => {
                let started = self
                    .owner
                    .block_on(self.owner.store.put_multipart(&self.path))
                    .map_err(io::Error::other)?;
                self.upload.insert(WriteMultipart::new_with_chunk_size(started, PART_BYTES))
            }
        };
        self.owner
            .block_on(upload.wait_for_capacity(UPLOAD_CONCURRENCY))
            .map_err(io::Error::other)?;
        upload.put(Bytes::from(std::mem::take(&mut self.buffer)));
        Ok(())
    }

    /// Completes the object; returns its checksums.
    fn finish(mut self) -> Result<Checksums> {
        self.close_segment();
        let _context = self.owner.runtime.enter();
        let fail = |e| store_error("write a result", e);
        match self.upload.take() {
            None => {
                let payload = PutPayload::from(std::mem::take(&mut self.buffer));
                self.owner.block_on(self.owner.store.put(&self.path, payload)).map_err(fail)?;
            }
            Some(mut upload) => {
                upload.put(Bytes::from(std::mem::take(&mut self.buffer)));
                self.owner.block_on(upload.finish()).map_err(fail)?;
            }
        }
        Ok(self.checksums)
    }

    fn abort(mut self) {
        if let Some(upload) = self.upload.take() {
            let _ = self.owner.block_on(upload.abort());
        }
    }
}

impl Write for ObjectWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        if self.buffer.len() >= PART_BYTES {
            self.spill()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.close_segment();
        Ok(())
    }
}

/// Where a stored file's bytes come from: an open local file (which stays readable if a sweep
/// unlinks it mid-stream) or ranged GETs.
enum Source {
    File(std::fs::File, PathBuf),
    Object { store: Arc<dyn ObjectStore>, path: ObjectPath, runtime: Runtime, size: u64 },
}

impl Source {
    /// Moves damaged data aside (`<handle>.arrow.damaged`): the next read finds no data and
    /// recomputes it from lineage, or reports the loss; the bytes stay for inspection until the
    /// result is deleted.
    fn quarantine(&self) {
        let moved = match self {
            Source::File(_, path) => std::fs::rename(path, damaged_file(path)).map_err(|e| e.to_string()),
            Source::Object { store, path, runtime, .. } => runtime
                .block_on(store.rename(path, &ObjectPath::from(format!("{path}.damaged"))))
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = moved {
            tracing::warn!(error = %e, "could not move damaged data aside");
        }
    }

    fn size(&self) -> Result<u64> {
        match self {
            Source::File(file, _) => file
                .metadata()
                .map(|m| m.len())
                .map_err(|e| Error::Unavailable(format!("state store: cannot read a result: {}", e.kind()))),
            Source::Object { size, .. } => Ok(*size),
        }
    }

    fn read(&self, range: Range<u64>) -> Result<Bytes> {
        let bytes = match self {
            Source::File(file, _) => {
                let buf = read_exact_at(file, range).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => Error::DataLoss("stored result is shorter than written".into()),
                    kind => Error::Unavailable(format!("state store: cannot read a result: {kind}")),
                })?;
                Bytes::from(buf)
            }
            Source::Object { store, path, runtime, .. } => {
                runtime.block_on(store.get_range(path, range)).map_err(|e| store_error("read a result", e))?
            }
        };
        crate::metrics::metrics().store_read.inc_by(bytes.len() as u64);
        Ok(bytes)
    }
}

/// Reads `range` of `file` into a new buffer without zeroing it first (a block of a result is
/// megabytes, and zeroing it cost as much as reading it).
fn read_exact_at(file: &std::fs::File, range: Range<u64>) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(range.end - range.start).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = Vec::<u8>::with_capacity(len);
    let mut filled = 0;
    while filled < len {
        let offset = libc::off_t::try_from(range.start + filled as u64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the destination is the unfilled part of `buf`'s allocation, `len - filled`
        // bytes from `filled`; the kernel writes at most that many bytes there.
        let read = unsafe {
            libc::pread(file.as_raw_fd(), buf.as_mut_ptr().add(filled).cast(), len - filled, offset)
        };
        match read {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            n => filled += n as usize,
        }
    }
    // SAFETY: the loop above initialised all `len` bytes.
    unsafe { buf.set_len(len) };
    Ok(buf)
}

/// A stored IPC file whose every byte is checked against its checksums before it is decoded.
/// Results written before checksums existed are read unchecked.
struct VerifiedFile {
    source: Source,
    checksums: Option<Checksums>,
    handle: Handle,
    size: u64,
}

impl VerifiedFile {
    fn open(source: Source, handle: &Handle, checksums: Option<Checksums>) -> Result<VerifiedFile> {
        let size = source.size()?;
        if let Some(c) = &checksums
            && c.size() != size
        {
            source.quarantine();
            return Err(Error::DataLoss(format!(
                "stored result {handle} is {size} bytes; {} were written",
                c.size()
            )));
        }
        Ok(VerifiedFile { source, checksums, handle: handle.clone(), size })
    }

    /// The error for damage found: the data is moved aside first.
    fn corrupt(&self, what: &str) -> Error {
        self.source.quarantine();
        Error::DataLoss(format!("stored result {} is damaged: {what}", self.handle))
    }

    /// The bytes of `range`, read with (and checked as part of) the segment that holds them.
    fn read(&self, range: Range<u64>) -> Result<Bytes> {
        if range.end > self.size || range.start > range.end {
            return Err(self.corrupt("a block lies outside the file"));
        }
        let Some(checksums) = &self.checksums else { return self.source.read(range) };
        let (i, segment) = checksums.segment(&range).ok_or_else(|| self.corrupt("a block crosses segments"))?;
        let bytes = self.source.read(segment.clone())?;
        if !checksums.verify(i, &bytes) {
            return Err(self.corrupt(&format!("checksum mismatch in bytes {}..{}", segment.start, segment.end)));
        }
        let from = (range.start - segment.start) as usize;
        Ok(bytes.slice(from..from + (range.end - range.start) as usize))
    }

    /// Checks every byte (before Polars reads the file itself).
    fn verify_all(&self) -> Result<()> {
        if let Some(checksums) = &self.checksums {
            let mut start = 0;
            for &end in &checksums.ends {
                self.read(start..end)?;
                start = end;
            }
        }
        Ok(())
    }

    /// The file's schema, IPC version, dictionary blocks and record batch blocks, from its footer.
    fn footer(&self) -> Result<(SchemaRef, MetadataVersion, Vec<Block>, Vec<Block>)> {
        if self.size < 10 {
            return Err(self.corrupt("too short"));
        }
        let trailer = self.read(self.size - 10..self.size)?;
        let trailer: [u8; 10] = trailer[..].try_into().map_err(|_| self.corrupt("short read"))?;
        let footer_len = read_footer_length(trailer).map_err(|e| self.corrupt(&e.to_string()))? as u64;
        if footer_len + 10 > self.size {
            return Err(self.corrupt("footer longer than the file"));
        }
        let footer_bytes = self.read(self.size - 10 - footer_len..self.size - 10)?;
        let footer = root_as_footer(&footer_bytes).map_err(|e| self.corrupt(&e.to_string()))?;
        let fb_schema = footer.schema().ok_or_else(|| self.corrupt("no schema"))?;
        crate::ipc::check_schema(fb_schema).map_err(|e| self.corrupt(&e.to_string()))?;
        let schema: SchemaRef = Arc::new(fb_to_schema(fb_schema));
        let dictionaries = footer.dictionaries().iter().flatten().copied().collect();
        let batches = footer.recordBatches().iter().flatten().copied().collect();
        Ok((schema, footer.version(), dictionaries, batches))
    }

    /// One block's bytes, checked.
    fn block(&self, block: &Block) -> Result<Bytes> {
        let range = block_range(block).ok_or_else(|| self.corrupt("a block with impossible bounds"))?;
        let bytes = self.read(range)?;
        crate::ipc::check_block(&bytes, block.metaDataLength(), MAX_BLOCK_DECODED_BYTES).map_err(|e| self.corrupt(&e.to_string()))?;
        Ok(bytes)
    }

    fn into_batches(self) -> Result<BatchStream> {
        let (schema, version, dictionaries, blocks) = self.footer()?;
        let mut decoder = FileDecoder::new(schema.clone(), version);
        for block in &dictionaries {
            let bytes = self.block(block)?;
            crate::contain::guard(|panic| self.corrupt(&panic), || {
                decoder.read_dictionary(block, &Buffer::from(bytes)).map_err(|e| self.corrupt(&e.to_string()))
            })?;
        }
        Ok(BatchStream { schema, batches: Box::new(BlockReader { file: self, decoder, blocks: blocks.into_iter() }) })
    }

    /// The record batches as the IPC messages stored, when they can be sent as they are: every
    /// byte is covered by checksums (so nothing unchecked reaches a client) and there are no
    /// dictionaries (which a stream would have to send first).
    fn into_messages(self) -> Result<Option<IpcStream>> {
        if self.checksums.is_none() {
            return Ok(None);
        }
        let (schema, _, dictionaries, blocks) = self.footer()?;
        if !dictionaries.is_empty() {
            return Ok(None);
        }
        let messages = blocks.into_iter().map(move |block| {
            let bytes = self.block(&block)?;
            let (header, body) = crate::ipc::block_parts(&bytes).map_err(|e| self.corrupt(&e.to_string()))?;
            Ok(IpcMessage { header: bytes.slice(header), body: bytes.slice(body) })
        });
        Ok(Some(IpcStream { schema, messages: Box::new(messages) }))
    }
}

/// Record batches of a [`VerifiedFile`], one block at a time.
struct BlockReader {
    file: VerifiedFile,
    decoder: FileDecoder,
    blocks: std::vec::IntoIter<Block>,
}

impl Iterator for BlockReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let block = self.blocks.next()?;
        let bytes = match self.file.block(&block) {
            Ok(bytes) => bytes,
            Err(e) => return Some(Err(e)),
        };
        let decoded = crate::contain::guard(|panic| self.file.corrupt(&panic), || {
            self.decoder.read_record_batch(&block, &Buffer::from(bytes)).map_err(|e| self.file.corrupt(&e.to_string()))
        });
        match decoded {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => self.next(),
            Err(e) => Some(Err(e)),
        }
    }
}

fn damaged_file(path: &std::path::Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".damaged");
    PathBuf::from(name)
}

/// The bytes of a footer's block; `None` for negative or overflowing figures (a damaged footer).
fn block_range(block: &Block) -> Option<Range<u64>> {
    let start = u64::try_from(block.offset()).ok()?;
    let meta = u64::try_from(block.metaDataLength()).ok()?;
    let body = u64::try_from(block.bodyLength()).ok()?;
    Some(start..start.checked_add(meta)?.checked_add(body)?)
}

impl StateStore for ObjectStateStore {
    fn object_store(&self) -> Option<Arc<dyn ObjectStore>> {
        Some(self.store.clone())
    }

    fn object_path(&self, handle: &Handle) -> Option<ObjectPath> {
        Some(self.path(handle, "arrow"))
    }

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
        let bytes = match self.block_on(async {
            self.store.get(&self.path(handle, "json")).await?.bytes().await
        }) {
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

    fn open_messages(&self, handle: &Handle) -> Result<Option<IpcStream>> {
        self.verified(handle)?.into_messages()
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

    fn damaged(&self, handle: &Handle) -> bool {
        self.block_on(self.store.head(&self.path(handle, "arrow.damaged"))).is_ok()
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

    fn remove_orphans(&self, cutoff: chrono::DateTime<Utc>) -> Result<usize> {
        ObjectStateStore::remove_orphans(self, cutoff)
    }

    fn scan(&self, handle: &Handle) -> Result<Option<polars::prelude::LazyFrame>> {
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
        let Some(checksums) = self.meta(handle)?.and_then(|m| m.checksums) else { return Ok(None) };
        let checksums = Some(checksums);
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::Unavailable(format!("state store: cannot open a result: {}", e.kind())))?;
        if let Err(e) = VerifiedFile::open(Source::File(file, path.clone()), handle, checksums).and_then(|f| f.verify_all()) {
            if self.local_dir.is_none() {
                // A bad scratch copy is fetched again next time; the stored object is checked then.
                let _ = std::fs::remove_file(damaged_file(&path));
            }
            return Err(e);
        }
        let lf = LazyFrame::scan_ipc(PlRefPath::new(text), IpcScanOptions::default(), UnifiedScanArgs::default())?;
        Ok(Some(lf))
    }

    fn put_doc(&self, key: &str, bytes: Vec<u8>, create_only: bool) -> Result<bool> {
        let path = self.doc_path(key);
        let mode = if create_only { PutMode::Create } else { PutMode::Overwrite };
        let options = PutOptions { mode, ..Default::default() };
        match self.block_on(self.store.put_opts(&path, PutPayload::from(bytes), options)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error("write a document", e)),
        }
    }

    fn get_doc(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.doc_path(key);
        match self.block_on(async { self.store.get(&path).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error("read a document", e)),
        }
    }

    fn list_docs(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.doc_path(prefix);
        let objects: Vec<_> = self.block_on(self.store.list(Some(&dir)).collect::<Vec<_>>());
        let mut keys = Vec::new();
        for object in objects {
            let object = object.map_err(|e| store_error("list documents", e))?;
            if let Some(name) = object.location.filename() {
                keys.push(format!("{prefix}/{name}"));
            }
        }
        Ok(keys)
    }

    fn delete_doc(&self, key: &str) -> Result<()> {
        match self.block_on(self.store.delete(&self.doc_path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error("delete a document", e)),
        }
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
        assert!(matches!(store_error("write a result", refused), Error::Unavailable(_)), "a refusing disk");
        let denied = object_store::Error::PermissionDenied { path: "results/x".into(), source: "403".into() };
        assert!(matches!(store_error("write a result", denied), Error::Internal(_)), "credentials are configuration");
        let raced = object_store::Error::Precondition { path: "results/x".into(), source: "412".into() };
        assert!(matches!(store_error("write a result", raced), Error::Unavailable(_)), "a lost race is retried");
    }
}
