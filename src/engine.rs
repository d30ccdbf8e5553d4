//! One operation's life: parse -> admit -> load inputs -> run on the blocking pool -> persist.
//!
//! The engine is what the Flight adapter calls. It owns the rules that are not the store's or
//! Polars': a result's key is derived from the request, so a repeated request finds the result
//! instead of recomputing it; expired results are NOT_FOUND; limits apply before work starts.
//! Polars runs only inside [`Engine::blocking`], which keeps the async runtime free and turns a
//! Polars panic into INTERNAL while the worker keeps serving.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use polars::prelude::DataFrame;
use serde_json::{Value, json};

use crate::cache::ResultCache;
use crate::clock::SharedClock;
use crate::config::{Config, StoreConfig};
use crate::convert;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::names;
use crate::limits::{Admission, Limits};
use crate::files::{self as file_io, Format, ReadSpec, WriteSpec};
use crate::ops::{self, Input, Pipeline, Step};
use crate::quota::Quotas;
use crate::request::Request;
use crate::tenant;
use crate::store::{
    self, BatchStream, IpcStream, Lineage, MemoryStore, ObjectStateStore, ResultMeta, StateStore,
};

/// The worker's engine.
pub struct Engine {
    store: Arc<dyn StateStore>,
    limits: Limits,
    admission: Admission,
    data_dir: Option<PathBuf>,
    ttl: chrono::Duration,
    orphan_grace: chrono::Duration,
    read_grace: chrono::Duration,
    cache: Option<ResultCache>,
    executions: AtomicU64,
    recoveries: AtomicU64,
    quotas: Quotas,
    clock: SharedClock,
}

/// The JSON clients get for a result.
pub fn result_json(meta: &ResultMeta) -> Value {
    let mut v = json!({
        "handle": meta.handle.as_str(),
        "num_rows": meta.num_rows,
        "num_bytes": meta.num_bytes,
        "schema": meta.schema,
        "created_at": meta.created_at.to_rfc3339(),
        "expires_at": meta.expires_at.to_rfc3339(),
        "pinned": meta.pinned,
        "affinity": meta.affinity,
    });
    if let Some(name) = &meta.name {
        v["name"] = Value::String(name.clone());
    }
    v
}

/// Results with more than [`FEW_CHUNKS`] chunks averaging fewer rows than this are joined into one.
const MIN_CHUNK_ROWS: usize = 64 * 1024;
/// Chunks a result may have whatever their size.
const FEW_CHUNKS: usize = 8;

impl Engine {
    /// An engine for this configuration, with its store opened.
    pub fn try_new(config: &Config) -> Result<Engine> {
        let runtime = tokio::runtime::Handle::current();
        let store: Arc<dyn StateStore> = match &config.store {
            StoreConfig::Memory => Arc::new(MemoryStore::new()),
            StoreConfig::Directory(dir) => Arc::new(ObjectStateStore::open_dir(dir, runtime)?),
            StoreConfig::Url { url, options } => Arc::new(
                ObjectStateStore::open_url(url, options, runtime)?.with_scratch_dir(config.scratch_dir.clone()),
            ),
        };
        // In memory the store already holds decoded frames; elsewhere a cache saves the reads.
        let cache = match config.store {
            StoreConfig::Memory => None,
            _ => Some(ResultCache::new(config.cache_bytes)),
        };
        Ok(Engine {
            cache,
            recoveries: AtomicU64::new(0),
            orphan_grace: chrono::Duration::from_std(config.orphan_grace)
                .map_err(|_| Error::invalid("orphan grace out of range"))?,
            read_grace: chrono::Duration::from_std(config.gc_interval)
                .map_err(|_| Error::invalid("sweep interval out of range"))?,
            store,
            admission: Admission::new(config.limits.max_concurrent_ops, config.limits.max_queued_ops, config.limits.queue_timeout),
            limits: config.limits.clone(),
            data_dir: config.data_dir.clone(),
            ttl: chrono::Duration::from_std(config.result_ttl)
                .map_err(|_| Error::invalid("result TTL out of range"))?,
            executions: AtomicU64::new(0),
            quotas: Quotas::new(
                config.tenant_quota,
                config.auth.as_ref().map(|a| a.quotas().clone()).unwrap_or_default(),
            ),
            clock: config.clock.clone(),
        })
    }

    /// The current time, by the engine's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many operations this engine has computed (not counting results found already stored).
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::Relaxed)
    }

    /// How many lost results this engine has recomputed from their lineage.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Relaxed)
    }

    /// The store results live in.
    pub fn store(&self) -> Arc<dyn StateStore> {
        self.store.clone()
    }

    /// The decoded-result cache (absent with the memory store).
    pub fn cache(&self) -> Option<&ResultCache> {
        self.cache.as_ref()
    }

    /// Runs `f` on the blocking pool; a panic becomes INTERNAL.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        match tokio::task::spawn_blocking(f).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(panicked(e.into_panic())),
            Err(_) => Err(Error::Internal("the operation was cancelled".into())),
        }
    }

    /// Runs `f` against the store: on the blocking pool when the store's calls may wait on I/O,
    /// in place when they never do (the memory store's lookups take microseconds; a hop to the
    /// blocking pool and back took longer than the call). A panic becomes INTERNAL either way.
    async fn on_store<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn StateStore) -> Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        if store.blocks() {
            self.blocking(move || f(store.as_ref())).await
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(store.as_ref()))).unwrap_or_else(|p| Err(panicked(p)))
        }
    }

    /// Runs `f` within the request timeout.
    async fn timed<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = self.limits.request_timeout;
        tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
            Err(Error::DeadlineExceeded(format!(
                "operation ran longer than {} s (POLARWAY_REQUEST_TIMEOUT_SECS)",
                limit.as_secs()
            )))
        })
    }

    /// Runs async work (an SQL query) in an operation slot within the request timeout.
    pub async fn admitted<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        self.timed(async {
            let _slot = self.admission.try_admit().await?;
            self.executions.fetch_add(1, Ordering::Relaxed);
            f.await
        })
        .await
    }

    /// Executes a DoAction and returns its JSON answer.
    pub async fn action(&self, op: &str, body: &[u8]) -> Result<Value> {
        let request = Request::parse(op, body)?;
        self.execute(request).await
    }

    /// Executes a parsed request and returns its JSON answer.
    pub async fn execute(&self, request: Request) -> Result<Value> {
        if matches!(request, Request::Transform { .. } | Request::Read { .. } | Request::Write { .. }) {
            // Under overload, refuse work that would queue before reading anything for it.
            self.admission.shed()?;
        }
        match request {
            Request::Transform { op, pipeline } => Ok(result_json(&self.transform(&op, pipeline).await?)),
            Request::Read { format, spec } => Ok(result_json(&self.read(format, spec).await?)),
            Request::Write { format, spec } => self.write(format, spec).await,
            Request::Schema { input } => {
                let meta = self.live_meta(&input).await?;
                Ok(json!({"handle": input.as_str(), "schema": meta.schema}))
            }
            Request::Shape { input } => {
                let meta = self.live_meta(&input).await?;
                Ok(json!({"handle": input.as_str(), "rows": meta.num_rows, "columns": meta.schema.len()}))
            }
            Request::Explain { pipeline } => {
                let frames = self.inputs(&pipeline.handles()).await?;
                let limits = self.limits.clone();
                let plan = self
                    .blocking(move || {
                        let input = frames[&pipeline.input].clone();
                        let lf = ops::build(input, &pipeline.steps, &frames, &limits)?;
                        Ok(lf.describe_optimized_plan()?)
                    })
                    .await?;
                Ok(json!({"plan": plan}))
            }
            Request::Pin { handle, pinned } => Ok(result_json(&self.set_pinned(&handle, pinned).await?)),
            Request::Name { handle, name } => {
                let meta = self.bind_name(&name, &handle).await?;
                let mut answer = result_json(&meta);
                answer["name"] = Value::String(name);
                Ok(answer)
            }
            Request::DropHandle { handle } => {
                self.drop_handle(&handle).await?;
                Ok(json!({"handle": handle.as_str(), "dropped": true}))
            }
        }
    }

    /// Executes a command that must produce a result (GetFlightInfo, PollFlightInfo).
    pub async fn produce(&self, request: Request) -> Result<ResultMeta> {
        match request {
            Request::Transform { op, pipeline } => self.transform(&op, pipeline).await,
            Request::Read { format, spec } => self.read(format, spec).await,
            _ => Err(Error::invalid("this command does not produce a result; use DoAction")),
        }
    }

    /// The meta of a live result, or NOT_FOUND.
    pub async fn live_meta(&self, handle: &Handle) -> Result<ResultMeta> {
        let h = handle.clone();
        // Another tenant's result answers exactly like one that never existed.
        match self.on_store(move |store| store.meta(&h)).await? {
            Some(meta) if meta.is_live(self.now()) && meta.tenant == tenant::current() => Ok(meta),
            _ => Err(Error::NotFound(format!("handle {handle} not found or expired"))),
        }
    }

    /// Reads a live result's data with `read`; when the data is lost, recomputes it from its
    /// lineage first.
    async fn read_live<T: Send + 'static>(
        &self,
        meta: &ResultMeta,
        read: impl Fn(&dyn StateStore, &Handle) -> Result<T> + Send + Sync + Clone + 'static,
    ) -> Result<T> {
        let attempt = || {
            let (handle, read) = (meta.handle.clone(), read.clone());
            self.on_store(move |store| read(store, &handle))
        };
        match attempt().await {
            Err(Error::NotFound(_)) => {
                self.recover(meta).await?;
                attempt().await
            }
            // Damaged data is never decoded: it is recomputed from lineage when it can be, and
            // otherwise reported as lost.
            Err(Error::DataLoss(damage)) => {
                tracing::error!(handle = %meta.handle, damage, "stored result failed its checksum");
                match self.recover(meta).await {
                    Ok(()) => attempt().await,
                    Err(Error::NotFound(_)) => Err(Error::DataLoss(format!(
                        "{damage}; a `{}` cannot be recomputed",
                        meta.lineage.op
                    ))),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    /// A live result as a lazy batch stream.
    pub async fn open(&self, handle: &Handle) -> Result<BatchStream> {
        let meta = self.live_meta(handle).await?;
        self.read_live(&meta, |store, h| store.open_batches(h)).await
    }

    /// A live result as its stored IPC messages, when the store can hand them over undecoded.
    pub async fn open_messages(&self, handle: &Handle) -> Result<Option<IpcStream>> {
        let meta = self.live_meta(handle).await?;
        self.read_live(&meta, |store, h| store.open_messages(h)).await
    }

    /// A live result's Arrow schema, as DoGet will stream it.
    pub async fn schema(&self, handle: &Handle) -> Result<SchemaRef> {
        let meta = self.live_meta(handle).await?;
        self.read_live(&meta, |store, h| store.schema(h)).await
    }

    /// A live result as a frame: from the cache, else the store.
    async fn load(&self, handle: &Handle) -> Result<DataFrame> {
        let meta = self.live_meta(handle).await?;
        if let Some(frame) = self.cache.as_ref().and_then(|c| c.get(handle)) {
            return Ok(frame);
        }
        let frame = self.read_live(&meta, |store, h| store.load(h)).await?;
        if let Some(cache) = &self.cache {
            cache.insert(handle.clone(), frame.clone());
        }
        Ok(frame)
    }

    /// Recomputes a result whose metadata survives but whose data is gone, from the operation
    /// and inputs recorded in its lineage (inputs are recovered the same way if needed).
    fn recover<'a>(
        &'a self,
        meta: &'a ResultMeta,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let lost = || {
                Error::NotFound(format!(
                    "handle {}: its data is lost and a `{}` cannot be recomputed",
                    meta.handle, meta.lineage.op
                ))
            };
            if meta.lineage.op == "upload" || meta.lineage.op.starts_with("read_") || meta.lineage.op == "sql" || meta.lineage.op == "ingest" {
                let handle = meta.handle.clone();
                if self.on_store(move |store| Ok(store.damaged(&handle))).await? {
                    return Err(Error::DataLoss(format!(
                        "handle {}: its stored data is damaged and a `{}` cannot be recomputed",
                        meta.handle, meta.lineage.op
                    )));
                }
                return Err(lost());
            }
            let pipeline: Pipeline =
                serde_json::from_value(meta.lineage.params.clone()).map_err(|_| lost())?;
            tracing::warn!(handle = %meta.handle, op = %meta.lineage.op, "stored data missing; recomputing from lineage");
            let frame = self.compute(&pipeline).await?;
            self.recoveries.fetch_add(1, Ordering::Relaxed);
            let meta = meta.clone();
            self.on_store(move |store| store.put(&frame, meta)).await?;
            Ok(())
        })
    }

    /// Every live result.
    pub async fn list(&self) -> Result<Vec<ResultMeta>> {
        let now = self.now();
        let mut metas = self.on_store(|store| store.list()).await?;
        let tenant = tenant::current();
        metas.retain(|m| m.is_live(now) && m.tenant == tenant);
        metas.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.handle.cmp(&b.handle)));
        Ok(metas)
    }

    /// Moves a live result's expiry to `until` (or now + TTL).
    pub async fn renew(&self, handle: &Handle, until: Option<DateTime<Utc>>) -> Result<ResultMeta> {
        let mut meta = self.live_meta(handle).await?;
        let now = self.now();
        meta.expires_at = match until {
            Some(t) if t <= now => {
                return Err(Error::invalid("`expiration_time`: must be in the future"));
            }
            Some(t) => t,
            None => now + self.ttl,
        };
        let saved = meta.clone();
        self.on_store(move |store| store.write_meta(&saved)).await?;
        Ok(meta)
    }

    /// Deletes a live result.
    pub async fn drop_handle(&self, handle: &Handle) -> Result<()> {
        let meta = self.live_meta(handle).await?;
        let h = handle.clone();
        if self.on_store(move |store| store.delete(&h)).await? {
            self.quotas.remove(&meta);
        }
        Ok(())
    }

    /// Deletes every expired, unpinned result and the leftovers of interrupted uploads; returns
    /// how many results and orphans were deleted. Safe to run on every worker at once: a result
    /// another sweep deleted first is not an error, and a reader that already opened a result
    /// keeps reading it (files stay readable after unlink; object GETs are independent).
    pub async fn sweep(&self) -> Result<(usize, usize)> {
        let store = self.store.clone();
        let now = self.now();
        let orphan_cutoff = now - self.orphan_grace;
        let read_grace = self.read_grace;
        self.blocking(move || {
            // A result is deleted one sweep interval after it expires: reads opened while it was
            // live get that long to finish, also on stores that cannot read a deleted object.
            let cutoff = now - read_grace;
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

    /// An operation's input: a result too large for the cache is scanned lazily from the store
    /// when the store can (so only the columns and rows the plan needs are read); others are
    /// loaded through the cache.
    async fn input(&self, handle: &Handle) -> Result<Input> {
        let meta = self.live_meta(handle).await?;
        let large = self.cache.as_ref().is_some_and(|c| meta.num_bytes.saturating_mul(4) > c.capacity());
        if large && !self.cache.as_ref().is_some_and(|c| c.contains(handle)) {
            let store = self.store.clone();
            let h = handle.clone();
            if let Some(lf) = self.blocking(move || store.scan(&h)).await? {
                return Ok(Input { lf, rows: meta.num_rows });
            }
        }
        Ok(self.load(handle).await?.into())
    }

    async fn inputs(&self, handles: &[Handle]) -> Result<HashMap<Handle, Input>> {
        let mut inputs = HashMap::new();
        for h in handles {
            inputs.insert(h.clone(), self.input(h).await?);
        }
        Ok(inputs)
    }

    async fn load_all(&self, handles: &[Handle]) -> Result<HashMap<Handle, DataFrame>> {
        let mut frames = HashMap::new();
        for h in handles {
            frames.insert(h.clone(), self.load(h).await?);
        }
        Ok(frames)
    }

    /// Returns the stored result for `handle` if it is live.
    async fn existing(&self, handle: &Handle) -> Result<Option<ResultMeta>> {
        match self.live_meta(handle).await {
            Ok(meta) => Ok(Some(meta)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn new_meta(
        &self,
        handle: Handle,
        name: Option<String>,
        frame: &DataFrame,
        lineage: Lineage,
        affinity: Option<String>,
    ) -> ResultMeta {
        let now = self.now();
        ResultMeta {
            tenant: tenant::current(),
            affinity: affinity.unwrap_or_else(|| handle.to_string()),
            handle,
            name,
            schema: store::describe_schema(frame),
            num_rows: frame.height() as u64,
            num_bytes: 0,
            created_at: now,
            expires_at: now + self.ttl,
            pinned: false,
            lineage,
            checksums: None,
        }
    }

    async fn persist(&self, frame: DataFrame, meta: ResultMeta) -> Result<ResultMeta> {
        self.limits.check_shape(frame.height(), frame.width())?;
        // A column of one repeated value is held once until it is written or sent, then in full.
        let bytes = frame.estimated_size() as u64;
        self.limits.check_bytes(bytes, false)?;
        if self.quotas.enabled() {
            if self.quotas.needs_census() {
                let metas = self.on_store(|store| store.list()).await?;
                self.quotas.record_census(&metas, self.now());
            }
            self.quotas.check(meta.tenant.as_deref(), bytes)?;
        }
        let meta = self.on_store(move |store| store.put(&frame, meta)).await?;
        self.quotas.add(&meta);
        crate::metrics::metrics().handles_created.inc();
        tracing::info!(handle = %meta.handle, rows = meta.num_rows, bytes = meta.num_bytes, op = %meta.lineage.op, "result persisted");
        Ok(meta)
    }

    async fn transform(&self, op: &str, mut pipeline: Pipeline) -> Result<ResultMeta> {
        // A sample without a seed draws one now: the result is new, but reproducible from lineage.
        for step in &mut pipeline.steps {
            if !step.is_deterministic() {
                step.draw_seed(rand_seed());
            }
        }
        let params = serde_json::to_value(&pipeline).expect("pipeline serialises");
        let key = json!({"op": op, "params": params, "tenant": tenant::current()});
        let handle = Handle::derive(key.to_string().as_bytes());
        if let Some(meta) = self.existing(&handle).await? {
            return Ok(meta);
        }
        let input_meta = self.live_meta(&pipeline.input).await?;
        let frame = self.compute(&pipeline).await?;
        let lineage = Lineage {
            op: op.to_string(),
            params,
            inputs: pipeline.handles().iter().map(|h| h.to_string()).collect(),
        };
        let affinity = Some(input_meta.affinity).filter(|a| !a.is_empty());
        let meta = self.new_meta(handle, None, &frame, lineage, affinity);
        self.persist(frame, meta).await
    }

    /// Loads a pipeline's inputs, then runs it in an operation slot within the request timeout.
    async fn compute(&self, pipeline: &Pipeline) -> Result<DataFrame> {
        self.timed(async {
            // Inputs first: loading may itself recompute a lost input, which needs a slot.
            let frames = self.inputs(&pipeline.handles()).await?;
            let slot = self.admission.try_admit().await?;
            let limits = self.limits.clone();
            let steps = pipeline.steps.clone();
            let input = pipeline.input.clone();
            self.executions.fetch_add(1, Ordering::Relaxed);
            self.blocking(move || {
                // The slot stays taken until Polars finishes, even past a timeout, so a
                // runaway computation cannot be joined by ever more of them.
                let _slot = slot;
                let mut frame = ops::run(frames[&input].clone(), &steps, &frames, &limits)?;
                consolidate(&mut frame);
                Ok(frame)
            })
            .await
        })
        .await
    }

    async fn read(&self, format: Format, spec: ReadSpec) -> Result<ResultMeta> {
        let path = file_io::resolve(self.data_dir.as_deref(), &spec.path, true)?;
        // The file's size and modification time are part of the key: a changed file is a new result.
        let stat = std::fs::metadata(&path)
            .map_err(|_| Error::NotFound(format!("`{}` does not exist", spec.path)))?;
        let modified = stat
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let params = serde_json::to_value(&spec).expect("spec serialises");
        let key = json!({"op": "read", "format": format, "params": params, "size": stat.len(), "modified": modified.to_string(), "tenant": tenant::current()});
        let handle = Handle::derive(key.to_string().as_bytes());
        if let Some(meta) = self.existing(&handle).await? {
            return Ok(meta);
        }
        let slot = self.admission.try_admit().await?;
        self.timed(async {
            self.executions.fetch_add(1, Ordering::Relaxed);
            let read_spec = spec.clone();
            let frame = self
                .blocking(move || {
                    let _slot = slot;
                    file_io::read(format, &read_spec, &path)
                })
                .await?;
            let lineage = Lineage { op: format!("read_{}", format_name(format)), params, inputs: vec![] };
            let meta = self.new_meta(handle, None, &frame, lineage, None);
            self.persist(frame, meta).await
        })
        .await
    }

    async fn write(&self, format: Format, spec: WriteSpec) -> Result<Value> {
        let path = file_io::resolve(self.data_dir.as_deref(), &spec.path, false)?;
        let frames = self.load_all(std::slice::from_ref(&spec.input)).await?;
        let slot = self.admission.try_admit().await?;
        let mut frame = frames[&spec.input].clone();
        let bytes = self
            .timed(self.blocking(move || {
                let _slot = slot;
                file_io::write(format, &mut frame, &path)
            }))
            .await?;
        Ok(json!({"path": spec.path, "num_rows": frames[&spec.input].height(), "num_bytes": bytes}))
    }

    /// Stores an uploaded table. With an idempotency key, a repeat of the same upload returns the
    /// first one's result.
    pub async fn upload(
        &self,
        name: Option<String>,
        idempotency_key: Option<String>,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<ResultMeta> {
        let handle = match &idempotency_key {
            Some(key) => {
                let handle = Handle::derive(
                    json!({"op": "upload", "key": key, "tenant": tenant::current()}).to_string().as_bytes(),
                );
                if let Some(meta) = self.existing(&handle).await? {
                    return Ok(meta);
                }
                handle
            }
            None => Handle::random(),
        };
        let lineage = Lineage {
            op: "upload".into(),
            params: json!({"name": name, "idempotency_key": idempotency_key}),
            inputs: vec![],
        };
        let meta = self.store_batches(handle, name.clone(), lineage, schema, batches).await?;
        // A name that can be a table name also names the dataset for SQL.
        if let Some(name) = name.filter(|n| names::is_valid(n)) {
            self.bind_name(&name, &meta.handle).await?;
        }
        Ok(meta)
    }

    /// Persists arrow-rs batches (an upload, an SQL result) as the result `handle`.
    pub async fn store_batches(
        &self,
        handle: Handle,
        name: Option<String>,
        lineage: Lineage,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<ResultMeta> {
        let frame = self
            .blocking(move || {
                let mut frame = convert::batches_to_frame(&schema, &batches)?;
                consolidate(&mut frame);
                Ok(frame)
            })
            .await?;
        let meta = self.new_meta(handle, name, &frame, lineage, None);
        self.persist(frame, meta).await
    }

    /// Pins or unpins a live result.
    pub async fn set_pinned(&self, handle: &Handle, pinned: bool) -> Result<ResultMeta> {
        let mut meta = self.live_meta(handle).await?;
        if meta.pinned != pinned {
            meta.pinned = pinned;
            let saved = meta.clone();
            self.on_store(move |store| store.write_meta(&saved)).await?;
        }
        Ok(meta)
    }

    /// Binds `name` to a live result of the caller's tenant.
    pub async fn bind_name(&self, name: &str, handle: &Handle) -> Result<ResultMeta> {
        names::check(name)?;
        let meta = self.live_meta(handle).await?;
        let (tenant, name, h) = (tenant::current(), name.to_string(), handle.clone());
        self.on_store(move |store| names::bind(store, tenant.as_deref(), &name, &h)).await?;
        Ok(meta)
    }

    /// The live result `name` names for the caller's tenant, if any.
    pub async fn resolve_name(&self, name: &str) -> Result<Option<ResultMeta>> {
        let (tenant, owned) = (tenant::current(), name.to_string());
        let Some(handle) = self.on_store(move |store| names::resolve(store, tenant.as_deref(), &owned)).await? else {
            return Ok(None);
        };
        match self.live_meta(&handle).await {
            Ok(meta) => Ok(Some(meta)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The caller's named datasets whose results are live, by name.
    pub async fn named(&self) -> Result<Vec<(String, ResultMeta)>> {
        let tenant = tenant::current();
        let all = self.on_store(move |store| names::list(store, tenant.as_deref())).await?;
        let mut named = Vec::new();
        for name in all {
            if let Some(meta) = self.resolve_name(&name).await? {
                named.push((name, meta));
            }
        }
        Ok(named)
    }

    /// Runs steps over a streamed-in table without persisting anything (DoExchange).
    pub async fn exchange(&self, steps: Vec<Step>, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<DataFrame> {
        let mut handles = Vec::new();
        for h in steps.iter().flat_map(Step::referenced_handles) {
            if !handles.contains(&h) {
                handles.push(h);
            }
        }
        let frames = self.inputs(&handles).await?;
        let slot = self.admission.try_admit().await?;
        let limits = self.limits.clone();
        self.timed(self.blocking(move || {
            let _slot = slot;
            let input = convert::batches_to_frame(&schema, &batches)?;
            let mut out = ops::run(input.into(), &steps, &frames, &limits)?;
            limits.check_shape(out.height(), out.width())?;
            out.rechunk_mut_par();
            Ok(out)
        }))
        .await
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Csv => "csv",
        Format::Parquet => "parquet",
        Format::Ipc => "ipc",
    }
}

fn rand_seed() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{Column, df};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_becomes_internal() {
        let engine = Engine::try_new(&Config::with_store(StoreConfig::Memory)).unwrap();
        let err = engine.blocking(|| -> Result<()> { panic!("boom") }).await.unwrap_err();
        assert!(matches!(err, Error::Internal(m) if m.contains("boom")));
        assert_eq!(engine.blocking(|| Ok(7)).await.unwrap(), 7);
        // The memory store is called in place; a panic there is contained the same way.
        let err = engine.on_store(|_| -> Result<()> { panic!("bang") }).await.unwrap_err();
        assert!(matches!(err, Error::Internal(m) if m.contains("bang")));
        assert!(engine.on_store(|store| store.list()).await.unwrap().is_empty());
    }

    #[test]
    fn only_many_small_or_misaligned_chunks_are_joined() {
        let chunked = |sizes: &[usize]| {
            let mut frame = DataFrame::empty();
            for (i, &n) in sizes.iter().enumerate() {
                let part = df!("a" => vec![i as i64; n], "b" => vec![1.5f64; n]).unwrap();
                frame.vstack_mut(&part).unwrap();
            }
            frame
        };
        let mut few = chunked(&[5_000, 5_000]);
        consolidate(&mut few);
        assert_eq!(few.first_col_n_chunks(), 2, "a few chunks are kept");
        let mut many = chunked(&[10; 20]);
        consolidate(&mut many);
        assert_eq!(many.first_col_n_chunks(), 1, "many small chunks are joined");
        let mut large = chunked(&[70_000; 10]);
        consolidate(&mut large);
        assert_eq!(large.first_col_n_chunks(), 10, "large chunks are kept");
        // Columns split at different rows.
        let mut a = Column::new("a".into(), [1i64, 2]);
        a.append_owned(Column::new("a".into(), [3i64])).unwrap();
        let mut b = Column::new("b".into(), [1i64]);
        b.append_owned(Column::new("b".into(), [2i64, 3])).unwrap();
        let mut misaligned = DataFrame::new(3, vec![a, b]).unwrap();
        assert!(misaligned.should_rechunk());
        consolidate(&mut misaligned);
        assert!(!misaligned.should_rechunk());
        assert_eq!(misaligned.first_col_n_chunks(), 1);
    }
}

/// Joins a result's chunks where they would slow what comes next: when their columns are split
/// at different rows, or when there are many small ones. A few chunks, or large ones, cost later
/// operations nothing, and joining them copies the whole result once more (for a filter on 10k
/// rows, the join took as long as the filter).
fn consolidate(frame: &mut DataFrame) {
    let chunks = frame.first_col_n_chunks();
    if chunks > 1 && (frame.should_rechunk() || (chunks > FEW_CHUNKS && frame.height() / chunks < MIN_CHUNK_ROWS)) {
        frame.rechunk_mut_par();
    }
}

/// The error for an operation that panicked, logged with the panic's message.
fn panicked(payload: Box<dyn std::any::Any + Send>) -> Error {
    let msg = crate::contain::panic_message(payload.as_ref());
    tracing::error!(panic = msg, "operation panicked");
    Error::Internal(format!("the operation failed unexpectedly: {msg}"))
}

