//! The result catalog: which results a request can see, how long they live, and how their data
//! is read, cached, counted and recovered.
//!
//! A result is visible to the tenant that made it while it is live (pinned, or before its expiry);
//! to every other request it answers NOT_FOUND, exactly like a result that never existed. Reading
//! a live result whose data is gone (a store that lost a file) or damaged (a failed checksum)
//! recomputes it from its lineage when the lineage is a pipeline, and reports the loss otherwise.
//! Persisting checks the shape and byte limits and the tenant's quota before anything is stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use polars::prelude::DataFrame;

use crate::clock::SharedClock;
use crate::context::RequestContext;
use crate::engine::exec::{self, Executor};
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::limits::Limits;
use crate::ops::{self, Input, Pipeline};
use crate::store::cache::ResultCache;
use crate::store::{self, BatchStream, IpcStream, Lineage, ResultMeta, StateStore};
use crate::tenant::quota::Quotas;

/// Results with more than [`FEW_CHUNKS`] chunks averaging fewer rows than this are joined into one.
const MIN_CHUNK_ROWS: usize = 64 * 1024;
/// Chunks a result may have whatever their size.
const FEW_CHUNKS: usize = 8;

/// The results of one store, as requests see them.
pub struct Catalog {
    store: Arc<dyn StateStore>,
    cache: Option<ResultCache>,
    quotas: Quotas,
    limits: Limits,
    ttl: chrono::Duration,
    clock: SharedClock,
    exec: Arc<Executor>,
    recoveries: AtomicU64,
}

/// How a lost result can be made again, as its lineage records it.
enum Recipe {
    /// The steps that made it, over inputs that are results themselves.
    Pipeline(Box<Pipeline>),
    /// It came from outside (an upload, a file, a query, an ingest): it cannot be made again here.
    Source,
}

impl Recipe {
    fn of(lineage: &Lineage) -> Option<Recipe> {
        let op = lineage.op.as_str();
        if matches!(op, "upload" | "sql" | "ingest") || op.starts_with("read_") {
            return Some(Recipe::Source);
        }
        let pipeline: Pipeline = serde_json::from_value(lineage.params.clone()).ok()?;
        // What a scan read may have changed since: its result is not made again from the files.
        if pipeline.scans().is_empty() { Some(Recipe::Pipeline(Box::new(pipeline))) } else { Some(Recipe::Source) }
    }
}

impl Catalog {
    /// The catalog of `store`; results live for `ttl` unless pinned or renewed. `cache` holds
    /// decoded results for stores that keep files.
    pub fn new(
        store: Arc<dyn StateStore>,
        cache: Option<ResultCache>,
        quotas: Quotas,
        limits: Limits,
        ttl: chrono::Duration,
        clock: SharedClock,
        exec: Arc<Executor>,
    ) -> Catalog {
        Catalog { store, cache, quotas, limits, ttl, clock, exec, recoveries: AtomicU64::new(0) }
    }

    /// The current time, by the catalog's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The clock results expire by.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// The store results live in.
    pub fn store(&self) -> Arc<dyn StateStore> {
        self.store.clone()
    }

    /// The decoded-result cache (absent with the memory store).
    pub fn cache(&self) -> Option<&ResultCache> {
        self.cache.as_ref()
    }

    /// How many lost results have been recomputed from their lineage.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Relaxed)
    }

    /// Runs `f` against the store: on the blocking pool when the store's calls may wait on I/O,
    /// in place when they never do.
    pub async fn on_store<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn StateStore) -> Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        if store.blocks() {
            exec::blocking(move || f(store.as_ref())).await
        } else {
            exec::in_place(|| f(store.as_ref()))
        }
    }

    /// The meta of a result the request can see, or NOT_FOUND.
    pub async fn live_meta(&self, ctx: &RequestContext, handle: &Handle) -> Result<ResultMeta> {
        self.existing(ctx, handle)
            .await?
            .ok_or_else(|| Error::NotFound(format!("handle {handle} not found or expired")))
    }

    /// The meta of a result the request can see, or `None`.
    pub async fn existing(&self, ctx: &RequestContext, handle: &Handle) -> Result<Option<ResultMeta>> {
        let h = handle.clone();
        let meta = self.on_store(move |store| store.meta(&h)).await?;
        // Another tenant's result answers exactly like one that never existed.
        Ok(meta.filter(|meta| meta.is_live(self.now()) && ctx.owns(&meta.tenant)))
    }

    /// Every result the request can see, oldest first.
    pub async fn list(&self, ctx: &RequestContext) -> Result<Vec<ResultMeta>> {
        let now = self.now();
        let mut metas = self.on_store(|store| store.list()).await?;
        metas.retain(|m| m.is_live(now) && ctx.owns(&m.tenant));
        metas.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.handle.cmp(&b.handle)));
        Ok(metas)
    }

    /// Moves a result's expiry to `until` (or now + TTL).
    pub async fn renew(
        &self,
        ctx: &RequestContext,
        handle: &Handle,
        until: Option<DateTime<Utc>>,
    ) -> Result<ResultMeta> {
        let mut meta = self.live_meta(ctx, handle).await?;
        let now = self.now();
        meta.expires_at = match until {
            Some(t) if t <= now => return Err(Error::invalid("`expiration_time`: must be in the future")),
            Some(t) => t,
            None => now + self.ttl,
        };
        self.write_meta(&meta).await?;
        Ok(meta)
    }

    /// Pins or unpins a result.
    pub async fn set_pinned(&self, ctx: &RequestContext, handle: &Handle, pinned: bool) -> Result<ResultMeta> {
        let mut meta = self.live_meta(ctx, handle).await?;
        if meta.pinned != pinned {
            meta.pinned = pinned;
            self.write_meta(&meta).await?;
        }
        Ok(meta)
    }

    async fn write_meta(&self, meta: &ResultMeta) -> Result<()> {
        let saved = meta.clone();
        self.on_store(move |store| store.write_meta(&saved)).await
    }

    /// Deletes a result.
    pub async fn drop_handle(&self, ctx: &RequestContext, handle: &Handle) -> Result<()> {
        let meta = self.live_meta(ctx, handle).await?;
        let h = handle.clone();
        if self.on_store(move |store| store.delete(&h)).await? {
            self.quotas.remove(&meta);
        }
        Ok(())
    }

    /// The meta a new result of the request's tenant starts with; `affinity` defaults to its own
    /// handle, which starts a chain.
    pub fn new_meta(
        &self,
        ctx: &RequestContext,
        handle: Handle,
        name: Option<String>,
        frame: &DataFrame,
        lineage: Lineage,
        affinity: Option<String>,
    ) -> ResultMeta {
        let now = self.now();
        ResultMeta {
            tenant: ctx.tenant().map(str::to_string),
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

    /// Stores a new result, within the shape and byte limits and the tenant's quota.
    pub async fn persist(&self, frame: DataFrame, meta: ResultMeta) -> Result<ResultMeta> {
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

    /// A result as a lazy batch stream.
    pub async fn open(&self, ctx: &RequestContext, handle: &Handle) -> Result<BatchStream> {
        let meta = self.live_meta(ctx, handle).await?;
        self.read_live(ctx, &meta, |store, h| store.open_batches(h)).await
    }

    /// A result as its stored IPC messages, when the store can hand them over undecoded.
    pub async fn open_messages(&self, ctx: &RequestContext, handle: &Handle) -> Result<Option<IpcStream>> {
        let meta = self.live_meta(ctx, handle).await?;
        self.read_live(ctx, &meta, |store, h| store.open_messages(h)).await
    }

    /// A result's Arrow schema, as DoGet will stream it.
    pub async fn schema(&self, ctx: &RequestContext, handle: &Handle) -> Result<SchemaRef> {
        let meta = self.live_meta(ctx, handle).await?;
        self.read_live(ctx, &meta, |store, h| store.schema(h)).await
    }

    /// A result as a frame: from the cache, else the store.
    pub async fn load(&self, ctx: &RequestContext, handle: &Handle) -> Result<DataFrame> {
        let meta = self.live_meta(ctx, handle).await?;
        if let Some(frame) = self.cache.as_ref().and_then(|c| c.get(handle)) {
            return Ok(frame);
        }
        let frame = self.read_live(ctx, &meta, |store, h| store.load(h)).await?;
        if let Some(cache) = &self.cache {
            cache.insert(handle.clone(), frame.clone());
        }
        Ok(frame)
    }

    /// An operation's input: a result too large for the cache is scanned lazily from the store
    /// when the store can (so only the columns and rows the plan needs are read); others are
    /// loaded through the cache.
    async fn input(&self, ctx: &RequestContext, handle: &Handle) -> Result<Input> {
        let meta = self.live_meta(ctx, handle).await?;
        let large = self.cache.as_ref().is_some_and(|c| meta.num_bytes.saturating_mul(4) > c.capacity());
        if large && !self.cache.as_ref().is_some_and(|c| c.contains(handle)) {
            let h = handle.clone();
            if let Some(lf) = self.on_store(move |store| store.scan(&h)).await? {
                return Ok(Input { lf, rows: meta.num_rows });
            }
        }
        Ok(self.load(ctx, handle).await?.into())
    }

    /// The inputs of an operation, by handle.
    pub async fn inputs(&self, ctx: &RequestContext, handles: &[Handle]) -> Result<HashMap<Handle, Input>> {
        let mut inputs = HashMap::new();
        for h in handles {
            inputs.insert(h.clone(), self.input(ctx, h).await?);
        }
        Ok(inputs)
    }

    /// Runs a pipeline over its inputs as one operation, with `scans` its scan leaves, opened;
    /// loading the stored inputs comes first, since it may itself recompute a lost input, which
    /// needs a slot of its own.
    pub async fn compute(
        &self,
        ctx: &RequestContext,
        pipeline: &Pipeline,
        scans: HashMap<String, Input>,
    ) -> Result<DataFrame> {
        let frames = exec::within(ctx, self.inputs(ctx, &pipeline.handles())).await?;
        let leaves = ops::Leaves { frames, scans };
        let (limits, pipeline) = (self.limits.clone(), pipeline.clone());
        self.exec
            .compute(ctx, move || {
                let mut frame = ops::run(&pipeline, &leaves, &limits)?;
                consolidate(&mut frame);
                Ok(frame)
            })
            .await
    }

    /// Reads a live result's data with `read`; when the data is lost or damaged, recomputes it
    /// from its lineage first.
    async fn read_live<T: Send + 'static>(
        &self,
        ctx: &RequestContext,
        meta: &ResultMeta,
        read: impl Fn(&dyn StateStore, &Handle) -> Result<T> + Send + Sync + Clone + 'static,
    ) -> Result<T> {
        let attempt = || {
            let (handle, read) = (meta.handle.clone(), read.clone());
            self.on_store(move |store| read(store, &handle))
        };
        match attempt().await {
            Err(Error::NotFound(_)) => {
                self.recover(ctx, meta).await?;
                attempt().await
            }
            // Damaged data is never decoded: it is recomputed from lineage when it can be, and
            // otherwise reported as lost.
            Err(Error::DataLoss(damage)) => {
                tracing::error!(handle = %meta.handle, damage, "stored result failed its checksum");
                match self.recover(ctx, meta).await {
                    Ok(()) => attempt().await,
                    Err(Error::NotFound(_)) => {
                        Err(Error::DataLoss(format!("{damage}; a `{}` cannot be recomputed", meta.lineage.op)))
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    /// Recomputes a result whose metadata survives but whose data is gone, from the operation
    /// and inputs recorded in its lineage (inputs are recovered the same way if needed).
    fn recover<'a>(
        &'a self,
        ctx: &'a RequestContext,
        meta: &'a ResultMeta,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let lost = || {
                Error::NotFound(format!(
                    "handle {}: its data is lost and a `{}` cannot be recomputed",
                    meta.handle, meta.lineage.op
                ))
            };
            let pipeline = match Recipe::of(&meta.lineage) {
                Some(Recipe::Pipeline(pipeline)) => *pipeline,
                Some(Recipe::Source) => {
                    let handle = meta.handle.clone();
                    if self.on_store(move |store| Ok(store.damaged(&handle))).await? {
                        return Err(Error::DataLoss(format!(
                            "handle {}: its stored data is damaged and a `{}` cannot be recomputed",
                            meta.handle, meta.lineage.op
                        )));
                    }
                    return Err(lost());
                }
                None => return Err(lost()),
            };
            tracing::warn!(handle = %meta.handle, op = %meta.lineage.op, "stored data missing; recomputing from lineage");
            let frame = self.compute(ctx, &pipeline, HashMap::new()).await?;
            self.recoveries.fetch_add(1, Ordering::Relaxed);
            let meta = meta.clone();
            self.on_store(move |store| store.put(&frame, meta)).await?;
            Ok(())
        })
    }
}

/// Joins a result's chunks where they would slow what comes next: when their columns are split
/// at different rows, or when there are many small ones. A few chunks, or large ones, cost later
/// operations nothing, and joining them copies the whole result once more (for a filter on 10k
/// rows, the join took as long as the filter).
pub fn consolidate(frame: &mut DataFrame) {
    let chunks = frame.first_col_n_chunks();
    if chunks > 1 && (frame.should_rechunk() || (chunks > FEW_CHUNKS && frame.height() / chunks < MIN_CHUNK_ROWS)) {
        frame.rechunk_mut_par();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{Column, df};

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

    #[test]
    fn only_pipelines_can_be_recomputed() {
        let source = |op: &str| Lineage { op: op.into(), params: serde_json::json!({}), inputs: vec![] };
        for op in ["upload", "sql", "ingest", "read_csv", "read_parquet"] {
            assert!(matches!(Recipe::of(&source(op)), Some(Recipe::Source)), "{op}");
        }
        assert!(Recipe::of(&source("filter")).is_none(), "a pipeline's params that do not parse");
        let pipeline = Pipeline::over(Handle::random(), vec![]);
        let lineage = Lineage { op: "select".into(), params: serde_json::to_value(&pipeline).unwrap(), inputs: vec![] };
        assert!(matches!(Recipe::of(&lineage), Some(Recipe::Pipeline(p)) if p.input == pipeline.input));
    }
}
