//! The in-memory store: results stay in this process as Polars frames, never serialised.

use std::collections::HashMap;
use std::sync::RwLock;

use polars::prelude::DataFrame;

use super::{BatchStream, DocKey, DocSet, DocumentStore, FileCapabilities, ResultMeta, ResultStore};
use crate::convert;
use crate::error::{Error, Result};
use crate::handle::Handle;

/// Results held in process.
#[derive(Default)]
pub struct MemoryStore {
    entries: RwLock<HashMap<Handle, (DataFrame, ResultMeta)>>,
    docs: RwLock<std::collections::BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, handle: &Handle) -> Result<(DataFrame, ResultMeta)> {
        self.entries
            .read()
            .expect("store lock")
            .get(handle)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("handle {handle} not found")))
    }
}

impl ResultStore for MemoryStore {
    fn blocks(&self) -> bool {
        false
    }

    fn put(&self, frame: &DataFrame, mut meta: ResultMeta) -> Result<ResultMeta> {
        meta.num_bytes = frame.estimated_size() as u64;
        let mut entries = self.entries.write().expect("store lock");
        entries.insert(meta.handle.clone(), (frame.clone(), meta.clone()));
        Ok(meta)
    }

    fn meta(&self, handle: &Handle) -> Result<Option<ResultMeta>> {
        Ok(self.entries.read().expect("store lock").get(handle).map(|(_, m)| m.clone()))
    }

    fn write_meta(&self, meta: &ResultMeta) -> Result<()> {
        let mut entries = self.entries.write().expect("store lock");
        match entries.get_mut(&meta.handle) {
            Some(entry) => {
                entry.1 = meta.clone();
                Ok(())
            }
            None => Err(Error::NotFound(format!("handle {} not found", meta.handle))),
        }
    }

    fn load(&self, handle: &Handle) -> Result<DataFrame> {
        Ok(self.get(handle)?.0)
    }

    fn open_batches(&self, handle: &Handle) -> Result<BatchStream> {
        let (frame, _) = self.get(handle)?;
        let (schema, batches) = convert::frame_to_batches(&frame)?;
        Ok(BatchStream { schema, batches: Box::new(batches.into_iter().map(Ok)) })
    }

    fn schema(&self, handle: &Handle) -> Result<arrow::datatypes::SchemaRef> {
        // From the frame's own schema: no need to convert its columns.
        convert::arrow_schema(&self.get(handle)?.0)
    }

    fn delete(&self, handle: &Handle) -> Result<bool> {
        Ok(self.entries.write().expect("store lock").remove(handle).is_some())
    }

    fn list(&self) -> Result<Vec<ResultMeta>> {
        Ok(self.entries.read().expect("store lock").values().map(|(_, m)| m.clone()).collect())
    }
}

impl DocumentStore for MemoryStore {
    fn put_doc(&self, key: &DocKey, bytes: Vec<u8>, create_only: bool) -> Result<bool> {
        let mut docs = self.docs.write().expect("store lock");
        let path = key.path();
        if create_only && docs.contains_key(&path) {
            return Ok(false);
        }
        docs.insert(path, bytes);
        Ok(true)
    }

    fn get_doc(&self, key: &DocKey) -> Result<Option<Vec<u8>>> {
        Ok(self.docs.read().expect("store lock").get(&key.path()).cloned())
    }

    fn list_docs(&self, set: &DocSet) -> Result<Vec<DocKey>> {
        let dir = format!("{}/", set.dir());
        let docs = self.docs.read().expect("store lock");
        Ok(set.keys(docs.keys().filter_map(|path| path.strip_prefix(&dir)).filter(|file| !file.contains('/'))))
    }

    fn delete_doc(&self, key: &DocKey) -> Result<()> {
        self.docs.write().expect("store lock").remove(&key.path());
        Ok(())
    }
}

/// Frames in memory are not files: every capability answers as the defaults do.
impl FileCapabilities for MemoryStore {}
