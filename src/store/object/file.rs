//! One stored result's Arrow IPC file: written as one PUT or a multipart upload with a checksum
//! per segment, and read back by range, each block checked against its segment's checksum before
//! arrow-rs decodes it.

use std::io::{self, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::FileDecoder;
use arrow::ipc::{Block, MetadataVersion, convert::fb_to_schema, reader::read_footer_length, root_as_footer};
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::runtime::Handle as Runtime;

use super::{ObjectStateStore, store_error};
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::store::{BatchStream, Checksums, IpcMessage, IpcStream, MessageReader};

/// Results smaller than this go up in one PUT; larger ones in multipart chunks of this size.
const PART_BYTES: usize = 8 << 20;
/// The most one stored block may decode to. Results are written uncompressed in batches of a few
/// megabytes, so only a damaged or foreign file claims more.
const MAX_BLOCK_DECODED_BYTES: u64 = 1 << 30;
/// Multipart chunks in flight at once per upload.
const UPLOAD_CONCURRENCY: usize = 4;

/// A `Write` that turns into one PUT when small, or a multipart upload once past [`PART_BYTES`].
///
/// Every `flush` closes a checksum segment: the IPC writer is flushed after each record batch, so
/// segments end where batches end (see [`Checksums`]).
pub(super) struct ObjectWriter<'a> {
    owner: &'a ObjectStateStore,
    path: ObjectPath,
    buffer: Vec<u8>,
    upload: Option<WriteMultipart>,
    written: u64,
    hasher: crc32fast::Hasher,
    checksums: Checksums,
}

impl<'a> ObjectWriter<'a> {
    pub(super) fn new(owner: &'a ObjectStateStore, path: ObjectPath) -> Self {
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
                let started =
                    self.owner.block_on(self.owner.store.put_multipart(&self.path)).map_err(io::Error::other)?;
                self.upload.insert(WriteMultipart::new_with_chunk_size(started, PART_BYTES))
            }
        };
        self.owner.block_on(upload.wait_for_capacity(UPLOAD_CONCURRENCY)).map_err(io::Error::other)?;
        upload.put(Bytes::from(std::mem::take(&mut self.buffer)));
        Ok(())
    }

    /// Completes the object; returns its checksums.
    pub(super) fn finish(mut self) -> Result<Checksums> {
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

    pub(super) fn abort(mut self) {
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
pub(super) enum Source {
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
            Source::File(file, _) => {
                file.metadata().map(|m| m.len()).map_err(|e| Error::store("state store: cannot read a result", e))
            }
            Source::Object { size, .. } => Ok(*size),
        }
    }

    fn read(&self, range: Range<u64>) -> Result<Bytes> {
        let bytes = match self {
            Source::File(file, _) => {
                let buf = read_exact_at(file, range).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => Error::DataLoss("stored result is shorter than written".into()),
                    _ => Error::store("state store: cannot read a result", e),
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
        let read = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().add(filled).cast(), len - filled, offset) };
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
pub(super) struct VerifiedFile {
    source: Source,
    checksums: Option<Checksums>,
    handle: Handle,
    size: u64,
}

impl VerifiedFile {
    pub(super) fn open(source: Source, handle: &Handle, checksums: Option<Checksums>) -> Result<VerifiedFile> {
        let size = source.size()?;
        if let Some(c) = &checksums
            && c.size() != size
        {
            source.quarantine();
            return Err(Error::DataLoss(format!("stored result {handle} is {size} bytes; {} were written", c.size())));
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
    pub(super) fn verify_all(&self) -> Result<()> {
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
        crate::store::ipc::check_schema(fb_schema).map_err(|e| self.corrupt(&e.to_string()))?;
        let schema: SchemaRef = Arc::new(fb_to_schema(fb_schema));
        let dictionaries = footer.dictionaries().iter().flatten().copied().collect();
        let batches = footer.recordBatches().iter().flatten().copied().collect();
        Ok((schema, footer.version(), dictionaries, batches))
    }

    /// One block's bytes, checked.
    fn block(&self, block: &Block) -> Result<Bytes> {
        let range = block_range(block).ok_or_else(|| self.corrupt("a block with impossible bounds"))?;
        let bytes = self.read(range)?;
        crate::store::ipc::check_block(&bytes, block.metaDataLength(), MAX_BLOCK_DECODED_BYTES)
            .map_err(|e| self.corrupt(&e.to_string()))?;
        Ok(bytes)
    }

    pub(super) fn into_batches(self) -> Result<BatchStream> {
        let (schema, version, dictionaries, blocks) = self.footer()?;
        let mut decoder = FileDecoder::new(schema.clone(), version);
        for block in &dictionaries {
            let bytes = self.block(block)?;
            crate::contain::guard(
                |panic| self.corrupt(&panic),
                || decoder.read_dictionary(block, &Buffer::from(bytes)).map_err(|e| self.corrupt(&e.to_string())),
            )?;
        }
        Ok(BatchStream { schema, batches: Box::new(BlockReader { file: self, decoder, blocks: blocks.into_iter() }) })
    }

    /// The record batches as the IPC messages stored, when they can be sent as they are: every
    /// byte is covered by checksums (so nothing unchecked reaches a client) and there are no
    /// dictionaries (which a stream would have to send first).
    pub(super) fn into_messages(self) -> Result<Option<IpcStream>> {
        if self.checksums.is_none() {
            return Ok(None);
        }
        let (schema, _, dictionaries, blocks) = self.footer()?;
        if !dictionaries.is_empty() {
            return Ok(None);
        }
        Ok(Some(IpcStream { schema, messages: Box::new(BlockMessages { file: self, blocks: blocks.into_iter() }) }))
    }
}

/// The stored IPC messages of a [`VerifiedFile`], one block at a time.
struct BlockMessages {
    file: VerifiedFile,
    blocks: std::vec::IntoIter<Block>,
}

impl Iterator for BlockMessages {
    type Item = Result<IpcMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        let block = self.blocks.next()?;
        let read = || {
            let bytes = self.file.block(&block)?;
            let (header, body) =
                crate::store::ipc::block_parts(&bytes).map_err(|e| self.file.corrupt(&e.to_string()))?;
            Ok(IpcMessage { header: bytes.slice(header), body: bytes.slice(body) })
        };
        Some(read())
    }
}

impl MessageReader for BlockMessages {
    fn next_size(&self) -> Option<usize> {
        // A block with impossible bounds is refused by the read itself.
        let block = self.blocks.as_slice().first()?;
        Some(block_range(block).and_then(|r| usize::try_from(r.end - r.start).ok()).unwrap_or(0))
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
        let decoded = crate::contain::guard(
            |panic| self.file.corrupt(&panic),
            || {
                self.decoder
                    .read_record_batch(&block, &Buffer::from(bytes))
                    .map_err(|e| self.file.corrupt(&e.to_string()))
            },
        );
        match decoded {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => self.next(),
            Err(e) => Some(Err(e)),
        }
    }
}

pub(super) fn damaged_file(path: &std::path::Path) -> PathBuf {
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
