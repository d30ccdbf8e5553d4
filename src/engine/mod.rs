//! What a request asks of the worker, done: operations over results, file reads and writes,
//! uploads, exchanges, and the catalog actions (schema, pin, name, drop).
//!
//! The engine is what the Flight adapter and the job queue call. It owns one rule that is not the
//! catalog's or Polars': a result's handle is derived from the request that makes it, so a
//! repeated request (a retry, the same call on another worker) finds the result instead of
//! computing it again. Every computation runs through the [`Executor`]; every result is read and
//! persisted through the [`Catalog`]. Answers are typed ([`Outcome`]); the Flight layer shapes
//! them for the wire.

/// The one way work runs: admitted, within the deadline, on the blocking pool, panics contained.
pub mod exec;
/// Expiry: deleting expired results and the leftovers of interrupted writes.
pub mod gc;
/// Batch jobs queued in the shared store, claimed with leases.
pub mod jobs;
/// Named datasets: a tenant's tables for Flight SQL, resolved through the shared store.
pub mod names;
/// Parsing of DoAction bodies and command descriptors into typed requests.
pub mod request;
/// Which results a request sees, their lifetime, reads, cache, quota and recovery from lineage.
pub mod results;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use polars::prelude::DataFrame;
use serde_json::json;

use self::exec::Executor;
use self::gc::Sweep;
use self::request::Request;
use self::results::Catalog;
use crate::config::{Config, StoreConfig};
use crate::context::RequestContext;
use crate::convert;
use crate::data::Data;
use crate::data::files::{self as file_io, Format, ReadSpec, WriteSpec};
use crate::data::sink::SinkSpec;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::limits::{Admission, Limits};
use crate::ops::{self, Pipeline, Step};
use crate::store::cache::ResultCache;
use crate::store::{self, ColumnInfo, Lineage, ResultMeta, StateStore};
use crate::tenant::quota::Quotas;

/// The worker's engine.
pub struct Engine {
    catalog: Catalog,
    exec: Arc<Executor>,
    limits: Limits,
    data_dir: Option<PathBuf>,
    data: Arc<Data>,
    sweep: Sweep,
}

/// What a request that does not stream came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A result, new or found already stored.
    Result(ResultMeta),
    /// A result that now answers to `name`.
    Named {
        /// The result.
        meta: ResultMeta,
        /// The name it answers to.
        name: String,
    },
    /// A result written to a file under the data root.
    Written {
        /// The file, relative to the data root.
        path: String,
        /// Rows written.
        rows: usize,
        /// Bytes written.
        bytes: u64,
    },
    /// A pipeline streamed into files under the data root.
    Sunk(crate::data::sink::Written),
    /// A result's columns.
    Schema {
        /// The result.
        handle: Handle,
        /// Its columns, in order.
        schema: Vec<ColumnInfo>,
    },
    /// A result's rows and columns.
    Shape {
        /// The result.
        handle: Handle,
        /// Its rows.
        rows: u64,
        /// Its columns.
        columns: usize,
    },
    /// A pipeline's optimised plan.
    Plan(String),
    /// A result deleted.
    Dropped(Handle),
}

impl Engine {
    /// An engine for this configuration, with its store opened.
    pub fn try_new(config: &Config) -> Result<Engine> {
        let store = store::open(&config.store, &config.scratch_dir, tokio::runtime::Handle::current())?;
        Engine::try_with_store(config, store)
    }

    /// An engine over a store opened elsewhere (an embedder's own backend); `config.store` says
    /// only whether the store keeps decoded frames (memory) or files, which a cache saves reading.
    pub fn try_with_store(config: &Config, store: Arc<dyn StateStore>) -> Result<Engine> {
        let cache = match config.store {
            StoreConfig::Memory => None,
            _ => Some(ResultCache::new(config.cache_bytes)),
        };
        let limits = &config.limits;
        let exec = Arc::new(Executor::new(Admission::new(
            limits.max_concurrent_ops,
            limits.max_queued_ops,
            limits.queue_timeout,
        )));
        let quotas =
            Quotas::new(config.tenant_quota, config.auth.as_ref().map(|a| a.quotas().clone()).unwrap_or_default());
        let duration = |d: std::time::Duration, what: &str| {
            chrono::Duration::from_std(d).map_err(|_| Error::invalid(format!("{what} out of range")))
        };
        let ttl = duration(config.result_ttl, "result TTL")?;
        let sweep =
            Sweep::new(duration(config.orphan_grace, "orphan grace")?, duration(config.gc_interval, "sweep interval")?);
        let catalog = Catalog::new(store, cache, quotas, limits.clone(), ttl, config.clock.clone(), exec.clone());
        let data = Arc::new(config.data.open(limits)?);
        Ok(Engine { catalog, exec, limits: limits.clone(), data_dir: config.data_dir.clone(), data, sweep })
    }

    /// The data root and its datasets.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The results this engine serves.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The executor every computation runs on.
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// How many operations this engine has computed (not counting results found already stored).
    pub fn executions(&self) -> u64 {
        self.exec.executions()
    }

    /// How many lost results this engine has recomputed from their lineage.
    pub fn recoveries(&self) -> u64 {
        self.catalog.recoveries()
    }

    /// The store results live in.
    pub fn store(&self) -> Arc<dyn StateStore> {
        self.catalog.store()
    }

    /// The decoded-result cache (absent with the memory store).
    pub fn cache(&self) -> Option<&ResultCache> {
        self.catalog.cache()
    }

    /// Deletes what has expired; see [`crate::engine::gc`].
    pub async fn sweep(&self) -> Result<(usize, usize)> {
        self.sweep.run(&self.catalog).await
    }

    /// Executes a DoAction.
    pub async fn action(&self, ctx: &RequestContext, op: &str, body: &[u8]) -> Result<Outcome> {
        self.execute(ctx, Request::parse(op, body)?).await
    }

    /// Executes a parsed request.
    pub async fn execute(&self, ctx: &RequestContext, request: Request) -> Result<Outcome> {
        if matches!(
            request,
            Request::Transform { .. } | Request::Read { .. } | Request::Write { .. } | Request::Sink { .. }
        ) {
            // Under overload, refuse work that would queue before reading anything for it.
            self.exec.shed()?;
        }
        let catalog = &self.catalog;
        Ok(match request {
            Request::Transform { op, pipeline } => Outcome::Result(self.transform(ctx, &op, pipeline).await?),
            Request::Read { format, spec } => Outcome::Result(self.read(ctx, format, spec).await?),
            Request::Write { format, spec } => self.write(ctx, format, spec).await?,
            Request::Sink { pipeline, sink } => Outcome::Sunk(self.sink(ctx, pipeline, sink).await?),
            Request::Schema { input } => {
                let meta = catalog.live_meta(ctx, &input).await?;
                Outcome::Schema { handle: input, schema: meta.schema }
            }
            Request::Shape { input } => {
                let meta = catalog.live_meta(ctx, &input).await?;
                Outcome::Shape { handle: input, rows: meta.num_rows, columns: meta.schema.len() }
            }
            Request::Explain { pipeline } => Outcome::Plan(self.explain(ctx, pipeline).await?),
            Request::Pin { handle, pinned } => Outcome::Result(catalog.set_pinned(ctx, &handle, pinned).await?),
            Request::Name { handle, name } => {
                let meta = names::bind_live(catalog, ctx, &name, &handle).await?;
                Outcome::Named { meta, name }
            }
            Request::DropHandle { handle } => {
                catalog.drop_handle(ctx, &handle).await?;
                Outcome::Dropped(handle)
            }
        })
    }

    /// Executes a command that must produce a result (GetFlightInfo, PollFlightInfo, a job).
    pub async fn produce(&self, ctx: &RequestContext, request: Request) -> Result<ResultMeta> {
        match request {
            Request::Transform { op, pipeline } => self.transform(ctx, &op, pipeline).await,
            Request::Read { format, spec } => self.read(ctx, format, spec).await,
            _ => Err(Error::invalid("this command does not produce a result; use DoAction")),
        }
    }

    /// The stored result a request's key derives, when there is one; else a handle for the new one.
    async fn derived(
        &self,
        ctx: &RequestContext,
        key: serde_json::Value,
    ) -> Result<std::result::Result<ResultMeta, Handle>> {
        let mut key = key;
        key["tenant"] = json!(ctx.tenant());
        let handle = Handle::derive(key.to_string().as_bytes());
        Ok(self.catalog.existing(ctx, &handle).await?.ok_or(handle))
    }

    async fn transform(&self, ctx: &RequestContext, op: &str, mut pipeline: Pipeline) -> Result<ResultMeta> {
        // A sample without a seed draws one now: the result is new, but reproducible from lineage.
        for step in &mut pipeline.steps {
            if !step.is_deterministic() {
                step.draw_seed(rand::random());
            }
        }
        let params = serde_json::to_value(&pipeline).expect("pipeline serialises");
        // A scan's files are part of the key: a changed dataset is a new result.
        let (scans, files) = self.open_scans(ctx, &pipeline).await?;
        let mut key = json!({"op": op, "params": params});
        if !files.is_empty() {
            key["files"] = json!(files);
        }
        let handle = match self.derived(ctx, key).await? {
            Ok(meta) => return Ok(meta),
            Err(handle) => handle,
        };
        let input_meta = match pipeline.input_handle() {
            Some(h) => Some(self.catalog.live_meta(ctx, h).await?),
            None => None,
        };
        let frame = self.catalog.compute(ctx, &pipeline, scans).await.map_err(|e| self.data.scrub(e))?;
        let inputs = pipeline.handles().iter().map(|h| h.to_string()).collect();
        let lineage = Lineage { op: op.to_string(), params, inputs };
        let affinity = input_meta.map(|m| m.affinity).filter(|a| !a.is_empty());
        let meta = self.catalog.new_meta(ctx, handle, None, &frame, lineage, affinity);
        self.catalog.persist(frame, meta).await
    }

    /// A dataset's columns, as Arrow: from the files' footers (Parquet, IPC) or their first rows (CSV).
    pub async fn dataset_schema(&self, ctx: &RequestContext, name: &str) -> Result<arrow::datatypes::SchemaRef> {
        let opened = exec::within(ctx, self.data.open(ctx, &ops::Source::Dataset(name.to_string()))).await?;
        exec::blocking(move || convert::arrow_schema(&opened.lf.limit(0).collect()?))
            .await
            .map_err(|e| self.data.scrub(e))
    }

    /// Opens a tree's scan leaves: their plans by [`ops::Source::key`], and the identities of
    /// the files they list, in the tree's order.
    async fn open_scans(
        &self,
        ctx: &RequestContext,
        pipeline: &Pipeline,
    ) -> Result<(HashMap<String, ops::Input>, Vec<String>)> {
        let mut scans = HashMap::new();
        let mut files = Vec::new();
        for leaf in pipeline.scans() {
            let opened = exec::within(ctx, self.data.open(ctx, leaf)).await?;
            files.push(opened.identity);
            scans.insert(leaf.key(), ops::Input { lf: opened.lf, rows: ops::UNKNOWN_ROWS });
        }
        Ok((scans, files))
    }

    /// Streams a pipeline's result into files under the data root (see [`crate::data::sink`]).
    async fn sink(
        &self,
        ctx: &RequestContext,
        pipeline: Pipeline,
        sink: SinkSpec,
    ) -> Result<crate::data::sink::Written> {
        let target = self.data.sink_target(ctx, &sink)?;
        let (scans, files) = self.open_scans(ctx, &pipeline).await?;
        let key = json!({"op": "sink", "tenant": ctx.tenant(), "pipeline": pipeline, "sink": sink, "files": files});
        let id = Handle::derive(key.to_string().as_bytes()).to_string();
        if let Some(written) = self.data.published(&target, &id).await? {
            return Ok(written);
        }
        let frames = exec::within(ctx, self.catalog.inputs(ctx, &pipeline.handles())).await?;
        let leaves = ops::Leaves { frames, scans };
        let (limits, data, runtime) = (self.limits.clone(), self.data.clone(), tokio::runtime::Handle::current());
        self.exec
            .compute(ctx, move || {
                let lf = ops::plan(&pipeline, &leaves, &limits)?;
                data.write(&runtime, lf, &sink, &target, &id)
            })
            .await
            .map_err(|e| self.data.scrub(e))
    }

    async fn explain(&self, ctx: &RequestContext, pipeline: Pipeline) -> Result<String> {
        let (scans, _) = self.open_scans(ctx, &pipeline).await?;
        let frames = exec::within(ctx, self.catalog.inputs(ctx, &pipeline.handles())).await?;
        let limits = self.limits.clone();
        exec::blocking(move || ops::explain(&pipeline, &ops::Leaves { frames, scans }, &limits))
            .await
            .map_err(|e| self.data.scrub(e))
    }

    async fn read(&self, ctx: &RequestContext, format: Format, spec: ReadSpec) -> Result<ResultMeta> {
        let path = file_io::resolve(self.data_dir.as_deref(), &spec.path, true)?;
        // The file's size and modification time are part of the key: a changed file is a new result.
        let stat = std::fs::metadata(&path).map_err(|_| Error::NotFound(format!("`{}` does not exist", spec.path)))?;
        let modified =
            stat.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let params = serde_json::to_value(&spec).expect("spec serialises");
        let key = json!({"op": "read", "format": format, "params": params, "size": stat.len(), "modified": modified.to_string()});
        let handle = match self.derived(ctx, key).await? {
            Ok(meta) => return Ok(meta),
            Err(handle) => handle,
        };
        let frame = self.exec.compute(ctx, move || file_io::read(format, &spec, &path)).await?;
        let lineage = Lineage { op: format!("read_{}", format.name()), params, inputs: vec![] };
        let meta = self.catalog.new_meta(ctx, handle, None, &frame, lineage, None);
        self.catalog.persist(frame, meta).await
    }

    async fn write(&self, ctx: &RequestContext, format: Format, spec: WriteSpec) -> Result<Outcome> {
        let path = file_io::resolve(self.data_dir.as_deref(), &spec.path, false)?;
        let mut frame = exec::within(ctx, self.catalog.load(ctx, &spec.input)).await?;
        let rows = frame.height();
        let bytes = self.exec.compute(ctx, move || file_io::write(format, &mut frame, &path)).await?;
        Ok(Outcome::Written { path: spec.path, rows, bytes })
    }

    /// Stores an uploaded table. With an idempotency key, a repeat of the same upload returns the
    /// first one's result.
    pub async fn upload(
        &self,
        ctx: &RequestContext,
        name: Option<String>,
        idempotency_key: Option<String>,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<ResultMeta> {
        let handle = match &idempotency_key {
            Some(key) => match self.derived(ctx, json!({"op": "upload", "key": key})).await? {
                Ok(meta) => return Ok(meta),
                Err(handle) => handle,
            },
            None => Handle::random(),
        };
        let params = json!({"name": name, "idempotency_key": idempotency_key});
        let lineage = Lineage { op: "upload".into(), params, inputs: vec![] };
        let meta = self.store_batches(ctx, handle, name.clone(), lineage, schema, batches).await?;
        // A name that can be a table name also names the dataset for SQL.
        if let Some(name) = name.filter(|n| names::is_valid(n)) {
            names::bind_live(&self.catalog, ctx, &name, &meta.handle).await?;
        }
        Ok(meta)
    }

    /// Persists arrow-rs batches (an upload, an SQL result) as the result `handle`.
    pub async fn store_batches(
        &self,
        ctx: &RequestContext,
        handle: Handle,
        name: Option<String>,
        lineage: Lineage,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<ResultMeta> {
        let frame = exec::blocking(move || {
            let mut frame = convert::batches_to_frame(&schema, &batches)?;
            results::consolidate(&mut frame);
            Ok(frame)
        })
        .await?;
        let meta = self.catalog.new_meta(ctx, handle, name, &frame, lineage, None);
        self.catalog.persist(frame, meta).await
    }

    /// Runs steps over a streamed-in table without persisting anything (DoExchange).
    pub async fn exchange(
        &self,
        ctx: &RequestContext,
        steps: Vec<Step>,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<DataFrame> {
        let mut handles = Vec::new();
        for h in steps.iter().flat_map(Step::referenced_handles) {
            if !handles.contains(&h) {
                handles.push(h);
            }
        }
        let frames = exec::within(ctx, self.catalog.inputs(ctx, &handles)).await?;
        let leaves = ops::Leaves::of_frames(frames);
        let limits = self.limits.clone();
        self.exec
            .compute(ctx, move || {
                let input = convert::batches_to_frame(&schema, &batches)?;
                let mut out = ops::run_over(input.into(), &steps, &leaves, &limits, true)?;
                limits.check_shape(out.height(), out.width())?;
                out.rechunk_mut_par();
                Ok(out)
            })
            .await
    }
}
