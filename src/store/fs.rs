//! The directory store: each result is one Arrow IPC file in a directory shared by the workers.
//!
//! Layout under the state directory:
//!
//! ```text
//! results/<handle>.arrow   the result, Arrow IPC file format
//! results/<handle>.json    its ResultMeta; present only once the .arrow file is complete
//! tmp/<random>             files being written
//! ```
//!
//! Both files are written to `tmp/`, flushed to disk and renamed into place, so a reader on any
//! worker sees either nothing or a complete file, and the meta appears only after the data.
//! Deleting removes the meta first: a handle without meta does not exist, whatever is left.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use polars::prelude::DataFrame;

use super::{BatchStream, ResultMeta, StateStore};
use crate::convert;
use crate::error::{Error, Result};
use crate::handle::Handle;

/// Results as Arrow IPC files under one directory.
pub struct DirectoryStore {
    results: PathBuf,
    tmp: PathBuf,
}

fn io_error(what: &str, err: io::Error) -> Error {
    Error::Unavailable(format!("state store: cannot {what}: {}", err.kind()))
}

impl DirectoryStore {
    /// Opens (and creates if needed) a store under `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let results = dir.join("results");
        let tmp = dir.join("tmp");
        for d in [&results, &tmp] {
            fs::create_dir_all(d).map_err(|e| io_error("create the state directory", e))?;
        }
        Ok(Self { results, tmp })
    }

    fn data_path(&self, handle: &Handle) -> PathBuf {
        self.results.join(format!("{handle}.arrow"))
    }

    fn meta_path(&self, handle: &Handle) -> PathBuf {
        self.results.join(format!("{handle}.json"))
    }

    /// Writes through `fill` into a temporary file, syncs it and renames it to `dest`.
    fn write_atomically(
        &self,
        dest: &Path,
        fill: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
    ) -> Result<u64> {
        let tmp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let result = (|| {
            let file = match File::create(&tmp) {
                // The temporary directory was removed under us (a cleanup job): recreate it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(&self.tmp).map_err(|e| io_error("create a file", e))?;
                    File::create(&tmp)
                }
                other => other,
            }
            .map_err(|e| io_error("create a file", e))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            fill(&mut writer)?;
            let file = writer.into_inner().map_err(|e| io_error("write", e.into_error()))?;
            file.sync_all().map_err(|e| io_error("sync", e))?;
            let len = file.metadata().map_err(|e| io_error("stat", e))?.len();
            fs::rename(&tmp, dest).map_err(|e| io_error("rename into place", e))?;
            Ok(len)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

impl StateStore for DirectoryStore {
    fn put(&self, frame: &DataFrame, mut meta: ResultMeta) -> Result<ResultMeta> {
        let (schema, batches) = convert::frame_to_batches(frame)?;
        let bytes = self.write_atomically(&self.data_path(&meta.handle), |out| {
            let mut writer = FileWriter::try_new(out, &schema)?;
            for batch in &batches {
                for part in convert::split_batch(batch, convert::BATCH_TARGET_BYTES) {
                    writer.write(&part)?;
                }
            }
            writer.finish()?;
            Ok(())
        })?;
        meta.num_bytes = bytes;
        self.write_meta(&meta)?;
        Ok(meta)
    }

    fn meta(&self, handle: &Handle) -> Result<Option<ResultMeta>> {
        let text = match fs::read(self.meta_path(handle)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read metadata", e)),
        };
        let meta = serde_json::from_slice(&text)
            .map_err(|e| Error::Internal(format!("stored metadata of {handle} is unreadable: {e}")))?;
        Ok(Some(meta))
    }

    fn write_meta(&self, meta: &ResultMeta) -> Result<()> {
        self.write_atomically(&self.meta_path(&meta.handle), |out| {
            serde_json::to_writer(&mut *out, meta)
                .map_err(|e| Error::Internal(format!("encoding metadata: {e}")))?;
            out.flush().map_err(|e| io_error("write metadata", e))
        })?;
        Ok(())
    }

    fn load(&self, handle: &Handle) -> Result<DataFrame> {
        let BatchStream { schema, batches } = self.open_batches(handle)?;
        let batches = batches.collect::<Result<Vec<_>>>()?;
        convert::batches_to_frame(&schema, &batches)
    }

    fn open_batches(&self, handle: &Handle) -> Result<BatchStream> {
        let file = match File::open(self.data_path(handle)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("handle {handle} not found")));
            }
            Err(e) => return Err(io_error("open a result", e)),
        };
        let reader = FileReader::try_new(BufReader::with_capacity(1 << 20, file), None)?;
        let schema = reader.schema();
        Ok(BatchStream { schema, batches: Box::new(reader.map(|b| b.map_err(Error::from))) })
    }

    fn delete(&self, handle: &Handle) -> Result<bool> {
        let existed = remove_if_present(&self.meta_path(handle))?;
        remove_if_present(&self.data_path(handle))?;
        Ok(existed)
    }

    fn list(&self) -> Result<Vec<ResultMeta>> {
        let entries = fs::read_dir(&self.results).map_err(|e| io_error("list results", e))?;
        let mut metas = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list results", e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            let Ok(handle) = Handle::parse(stem) else { continue };
            // A result deleted between listing and reading is simply gone.
            if let Some(meta) = self.meta(&handle)? {
                metas.push(meta);
            }
        }
        Ok(metas)
    }
}

fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("delete a result", e)),
    }
}
