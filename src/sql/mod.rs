//! SQL over a tenant's named datasets, with DataFusion.
//!
//! Each query gets its own `SessionContext` whose only schema resolves table names through the
//! caller's tenant namespace ([`crate::engine::names`]), so a query can see nothing else: no other
//! tenant's data, no files (DDL such as `CREATE EXTERNAL TABLE`, DML such as `COPY` and `INSERT`,
//! and statements such as `SET` are refused before planning, and URL tables are off). With an
//! object store, DataFusion reads the stored Arrow IPC files itself through the store's
//! `ObjectStore`, by range, without Polars; with the memory store it scans the stored frame's
//! buffers, shared without a copy. A query's result is persisted like any other, as a handle
//! derived from the query, its parameters and the results its tables named, so a repeat on any
//! worker names the same result.

mod tables;

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::{CacheManager, CacheManagerConfig};
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use futures::StreamExt;
use serde_json::json;

use crate::context::RequestContext;
use crate::engine::Engine;
use crate::engine::exec;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::limits::Limit;
use crate::store::{Lineage, ResultMeta};

/// The one catalog Flight SQL clients see.
pub const CATALOG: &str = "polarway";
/// The one schema in it.
pub const SCHEMA: &str = "public";
/// The URL the state store is registered under in each session.
const STORE_URL: &str = "polarway://state";

/// How an ingest treats an existing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Refuse.
    Fail,
    /// Add the rows.
    Append,
    /// Replace the table.
    Replace,
}

/// What an ingest may do with the table it names.
#[derive(Debug, Clone, Copy)]
pub struct IngestMode {
    /// What to do when the table exists.
    pub if_exists: IfExists,
    /// Whether a missing table may be created.
    pub create: bool,
    /// Whether the table is kept past the result TTL (a temporary one is not).
    pub pin: bool,
}

/// SQL over one worker's engine.
#[derive(Clone)]
pub struct SqlEngine {
    engine: Arc<Engine>,
    memory_limit: usize,
    /// Parsed Parquet footers and file statistics, shared by every query's session (each query
    /// has a runtime of its own, for its memory limit). Entries are checked against the file's
    /// size and modification time, so a changed file is read again.
    caches: CacheManagerConfig,
}

/// A planned query and the results its tables resolved to.
struct Planned {
    frame: datafusion::dataframe::DataFrame,
    inputs: Vec<Handle>,
    /// The datasets read, with their files' identities.
    files: Vec<String>,
}

/// A DataFusion error by its root cause, with no catch-all arm: the query's own mistakes are
/// INVALID_ARGUMENT, the store behind a table UNAVAILABLE (or NOT_FOUND, or full), DataFusion's
/// own faults INTERNAL.
fn sql_error(e: DataFusionError) -> Error {
    let query = |m: &dyn std::fmt::Display| format!("query: {m}");
    match e {
        DataFusionError::ResourcesExhausted(m) => Error::ResourceExhausted(query(&m)),
        DataFusionError::ArrowError(e, _) => Error::from(*e),
        DataFusionError::ObjectStore(e) => crate::store::object::store_error("read a table", *e),
        DataFusionError::IoError(e) => io_error(e),
        DataFusionError::External(e) => match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => match e.downcast::<object_store::Error>() {
                Ok(e) => crate::store::object::store_error("read a table", *e),
                Err(e) => match e.downcast::<std::io::Error>() {
                    Ok(e) => io_error(*e),
                    Err(e) => Error::Internal(query(&e)),
                },
            },
        },
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => sql_error(*inner),
        DataFusionError::Shared(e) => match std::sync::Arc::try_unwrap(e) {
            Ok(e) => sql_error(e),
            // Still shared with another consumer of the same stream: classified by reference.
            Err(e) => shared_error(e.find_root()),
        },
        DataFusionError::Collection(mut errors) => match errors.len() {
            0 => Error::Internal("query: an empty error collection".into()),
            _ => sql_error(errors.swap_remove(0)),
        },
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_)
        | DataFusionError::NotImplemented(_) => Error::invalid(query(&e.strip_backtrace())),
        DataFusionError::Substrait(m) | DataFusionError::Ffi(m) => Error::Unimplemented(query(&m)),
        DataFusionError::Internal(m) => Error::Internal(query(&m)),
        DataFusionError::ExecutionJoin(e) => Error::Internal(query(&e)),
        // A dataset's file that does not read as Parquet.
        DataFusionError::ParquetError(e) => Error::invalid(query(&e)),
    }
}

/// A DataFusion error that cannot be taken apart (another stream holds it), by the kind of its
/// root cause: the store's failures keep their status, the rest is the query's.
fn shared_error(root: &DataFusionError) -> Error {
    match root {
        DataFusionError::ObjectStore(e) => crate::store::object::store_failure("read a table", e)
            .unwrap_or_else(|| Error::store("state store: cannot read a table", e.to_string())),
        DataFusionError::IoError(e) => {
            io_failure(e).unwrap_or_else(|| Error::store("state store: cannot read a table", e.to_string()))
        }
        DataFusionError::External(e) => match e.downcast_ref::<Error>() {
            Some(ours) => Error::from_kind(ours.kind(), ours.to_string()),
            None => Error::Internal(format!("query: {e}")),
        },
        other => sql_error(DataFusionError::Execution(other.to_string())),
    }
}

/// Whether a parsed statement is a query (or the plan of one), the only statements run here.
fn is_query(statement: &datafusion::sql::parser::Statement) -> bool {
    use datafusion::sql::parser::Statement;
    use datafusion::sql::sqlparser::ast::Statement as Sql;
    match statement {
        Statement::Statement(sql) => matches!(sql.as_ref(), Sql::Query(_) | Sql::Explain { .. }),
        Statement::Explain(_) => true,
        Statement::CreateExternalTable(_) | Statement::CopyTo(_) | Statement::Reset(_) => false,
    }
}

fn io_error(e: std::io::Error) -> Error {
    io_failure(&e).unwrap_or_else(|| Error::store("state store: cannot read a table", e))
}

/// A failed read of a table's file by its kind; `None` is a generic failure, which the caller
/// reports as [`Error::Store`] with the source it has.
fn io_failure(e: &std::io::Error) -> Option<Error> {
    if crate::error::out_of_space(e) {
        Some(Error::StoreFull("state store is full: cannot read a table".into()))
    } else if e.kind() == std::io::ErrorKind::NotFound {
        Some(Error::NotFound("query: a table's data is missing".into()))
    } else {
        None
    }
}

/// Runs an expanding query ([`crate::ops::sqltext::expands`]) for its first row, and counts its rows
/// (a count reads no expanding column), before it runs in full: a result of that row's size
/// times the rows past the query's memory budget or the result limit is refused. Results arrive
/// in batches of thousands of rows, and `lpad(s, 100000000)` makes 100 GB in one of them, before
/// the streamed result could be stopped.
async fn probe(frame: &datafusion::dataframe::DataFrame, limits: &crate::limits::Limits) -> Result<()> {
    let first = frame.clone().limit(0, Some(1)).map_err(sql_error)?.collect().await.map_err(sql_error)?;
    let got: usize = first.iter().map(|b| b.num_rows()).sum();
    if got == 0 {
        return Ok(());
    }
    let per_row = first.iter().map(|b| b.get_array_memory_size()).sum::<usize>() / got;
    let rows = frame.clone().count().await.map_err(sql_error)?;
    let estimate = (per_row as u64).saturating_mul(rows as u64);
    if estimate > limits.max_sql_memory_bytes as u64 {
        return Err(Limit::SqlMemoryBytes.exceeded(format!(
            "query result would take about {estimate} bytes; the limit is {}",
            limits.max_sql_memory_bytes
        )));
    }
    limits.check_bytes(estimate, true)
}

/// Rewrites `?` placeholders (ADBC, JDBC) as `$1`, `$2`, ... in the order they appear, which is
/// how DataFusion numbers parameters. Text inside literals and comments is left alone.
fn number_placeholders(query: &str) -> Result<String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !query.contains('?') {
        return Ok(query.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, query)
        .tokenize_with_location()
        .map_err(|e| Error::invalid(format!("query: {e}")))?;
    // Byte offset of each line start, to turn (line, column in chars) into a byte position.
    let line_starts: Vec<usize> = std::iter::once(0).chain(query.match_indices('\n').map(|(i, _)| i + 1)).collect();
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(column).ok()?.checked_sub(1)?;
        Some(start + query[start..].char_indices().nth(column).map_or(query.len() - start, |(i, _)| i))
    };
    let mut out = String::with_capacity(query.len() + 8);
    let mut copied = 0;
    let mut n = 0;
    for token in tokens {
        if !matches!(&token.token, Token::Placeholder(p) if p == "?") {
            continue;
        }
        let at = offset(token.span.start.line, token.span.start.column)
            .filter(|&at| query[at..].starts_with('?'))
            .ok_or_else(|| Error::Internal("query: cannot place a parameter".into()))?;
        n += 1;
        out.push_str(&query[copied..at]);
        out.push_str(&format!("${n}"));
        copied = at + 1;
    }
    out.push_str(&query[copied..]);
    Ok(out)
}

/// Whether rows of schema `b` can be appended to a table of schema `a`: the same column names,
/// and types that differ at most in string or binary layout (Utf8, LargeUtf8, Utf8View) or nullability.
fn same_columns(a: &SchemaRef, b: &SchemaRef) -> bool {
    fn family(t: &DataType) -> DataType {
        match t {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
            other => other.clone(),
        }
    }
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && family(x.data_type()) == family(y.data_type()))
}

impl SqlEngine {
    /// SQL over `engine`'s results; each query may use up to `memory_limit` bytes for joins,
    /// sorts and aggregations before it fails with RESOURCE_EXHAUSTED.
    pub fn new(engine: Arc<Engine>, memory_limit: usize) -> SqlEngine {
        let shared = CacheManager::try_new(&CacheManagerConfig::default()).expect("default caches");
        let caches = CacheManagerConfig::default()
            .with_file_metadata_cache(Some(shared.get_file_metadata_cache()))
            .with_file_statistics_cache(shared.get_file_statistic_cache());
        SqlEngine { engine, memory_limit, caches }
    }

    fn session(&self, ctx: &RequestContext, resolved: Arc<Mutex<tables::Resolved>>) -> Result<SessionContext> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(false);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(self.caches.clone())
            .with_memory_limit(self.memory_limit, 1.0)
            .build_arc()
            .map_err(sql_error)?;
        let session = SessionContext::new_with_config_rt(config, runtime);
        let schema = tables::TenantSchema::new(self.engine.clone(), ctx.clone(), resolved);
        let catalog = datafusion::catalog::MemoryCatalogProvider::new();
        datafusion::catalog::CatalogProvider::register_schema(&catalog, SCHEMA, Arc::new(schema)).map_err(sql_error)?;
        session.register_catalog(CATALOG, Arc::new(catalog));
        if let Some(store) = self.engine.store().object_store() {
            let url = url::Url::parse(STORE_URL).expect("valid URL");
            session.register_object_store(&url, store);
        }
        if let Some((root, store)) = self.engine.data().object_store() {
            let url = url::Url::parse(&root).map_err(|e| Error::Internal(format!("data root: {e}")))?;
            session.register_object_store(&url, store);
        }
        Ok(session)
    }

    async fn plan(&self, ctx: &RequestContext, query: &str) -> Result<Planned> {
        crate::ops::sqltext::check("query", query)?;
        let query = &number_placeholders(query)?;
        let resolved = Arc::new(Mutex::new(tables::Resolved::default()));
        let session = self.session(ctx, resolved.clone())?;
        // Only queries: refused by the statement's kind before planning, and again by DataFusion's
        // own checks while it plans.
        let state = session.state();
        let statement =
            state.sql_to_statement(query, &state.config().options().sql_parser.dialect).map_err(sql_error)?;
        if !is_query(&statement) {
            return Err(Error::invalid("query: only queries run here (no DDL, DML or statements)"));
        }
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let frame = session.sql_with_options(query, options).await.map_err(sql_error)?;
        let tables::Resolved { handles: mut inputs, mut files } = resolved.lock().expect("sql lock").clone();
        files.sort();
        files.dedup();
        inputs.sort();
        inputs.dedup();
        Ok(Planned { frame, inputs, files })
    }

    /// The result's schema and the parameters' schema (`$1`, `$2`, ... in order) of a query.
    pub async fn prepare(&self, ctx: &RequestContext, query: &str) -> Result<(SchemaRef, SchemaRef)> {
        let (this, ctx, query) = (self.clone(), ctx.clone(), query.to_string());
        exec::on_cpu(async move { this.prepared(&ctx, &query).await.map_err(|e| this.engine.data().scrub(e)) }).await
    }

    async fn prepared(&self, ctx: &RequestContext, query: &str) -> Result<(SchemaRef, SchemaRef)> {
        let planned = self.plan(ctx, query).await?;
        let mut parameters: Vec<(String, Option<DataType>)> =
            planned.frame.logical_plan().get_parameter_types().map_err(sql_error)?.into_iter().collect();
        parameters.sort_by_key(|(name, _)| name.trim_start_matches('$').parse::<u64>().unwrap_or(u64::MAX));
        let fields: Vec<Field> = parameters
            .into_iter()
            .map(|(name, dtype)| Field::new(name, dtype.unwrap_or(DataType::Null), true))
            .collect();
        let dataset: Schema = planned.frame.schema().as_arrow().clone();
        Ok((Arc::new(dataset), Arc::new(Schema::new(fields))))
    }

    /// Runs a query with positional parameters and persists its result. Messages about a
    /// dataset's files name them under the data root, never the root itself.
    pub async fn query(&self, ctx: &RequestContext, query: &str, params: Vec<ScalarValue>) -> Result<ResultMeta> {
        // Planning is computation too (and DataFusion's planner recurses): it runs with the query
        // on the computation runtime.
        let (this, ctx, query) = (self.clone(), ctx.clone(), query.to_string());
        exec::on_cpu(async move { this.run(&ctx, &query, params).await.map_err(|e| this.engine.data().scrub(e)) }).await
    }

    async fn run(&self, ctx: &RequestContext, query: &str, params: Vec<ScalarValue>) -> Result<ResultMeta> {
        let planned = self.plan(ctx, query).await?;
        let params_text: Vec<String> = params.iter().map(|p| format!("{}:{p}", p.data_type())).collect();
        let handle = Handle::derive(
            json!({
                "op": "sql",
                "query": query,
                "params": params_text,
                "inputs": planned.inputs,
                "files": planned.files,
                "tenant": ctx.tenant(),
            })
            .to_string()
            .as_bytes(),
        );
        if let Some(meta) = self.engine.catalog().existing(ctx, &handle).await? {
            return Ok(meta);
        }
        let frame = if params.is_empty() {
            planned.frame
        } else {
            planned.frame.with_param_values(ParamValues::from(params)).map_err(sql_error)?
        };
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        // DataFusion's memory pool covers joins, sorts and aggregations but not the result
        // itself: a cross join streams out as many rows as it likes. The result is counted as
        // it arrives and stopped at the row limit or the query's memory budget.
        let limits = self.engine.limits().clone();
        let columns = schema.fields().len();
        let expands = crate::ops::sqltext::expands(query);
        let batches = self
            .engine
            .executor()
            .compute_async(ctx, async move {
                if expands {
                    probe(&frame, &limits).await?;
                }
                let mut stream = frame.execute_stream().await.map_err(sql_error)?;
                let (mut rows, mut bytes, mut batches) = (0usize, 0usize, Vec::new());
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(sql_error)?;
                    rows += batch.num_rows();
                    bytes += batch.get_array_memory_size();
                    limits.check_shape(rows, columns)?;
                    if bytes > limits.max_sql_memory_bytes {
                        return Err(Limit::SqlMemoryBytes
                            .exceeded(format!("query result exceeds {} bytes", limits.max_sql_memory_bytes)));
                    }
                    batches.push(batch);
                }
                Ok(batches)
            })
            .await?;
        let lineage = Lineage {
            op: "sql".into(),
            params: json!({"query": query, "params": params_text}),
            inputs: planned.inputs.iter().map(|h| h.to_string()).collect(),
        };
        self.engine.store_batches(ctx, handle, None, lineage, schema, batches).await
    }

    /// Creates, replaces or appends to the caller's table `name`; returns the rows ingested.
    pub async fn ingest(
        &self,
        ctx: &RequestContext,
        name: &str,
        mode: IngestMode,
        mut schema: SchemaRef,
        mut batches: Vec<RecordBatch>,
    ) -> Result<i64> {
        let IngestMode { if_exists, create, pin } = mode;
        crate::engine::names::check(name)?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let catalog = self.engine.catalog();
        let existing = crate::engine::names::resolve_live(catalog, ctx, name).await?;
        match (&existing, if_exists, create) {
            (Some(_), IfExists::Fail, _) => {
                return Err(Error::AlreadyExists(format!("table `{name}` exists")));
            }
            (None, _, false) => return Err(Error::NotFound(format!("table `{name}` does not exist"))),
            _ => {}
        }
        let mut inputs = Vec::new();
        if let (Some(old), IfExists::Append) = (&existing, if_exists) {
            let stored = catalog.open(ctx, &old.handle).await?;
            if !same_columns(&stored.schema, &schema) {
                let describe = |s: &SchemaRef| -> Vec<String> {
                    s.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect()
                };
                return Err(Error::invalid(format!(
                    "table `{name}` has columns {:?}; the rows sent have {:?}",
                    describe(&stored.schema),
                    describe(&schema)
                )));
            }
            let target = stored.schema.clone();
            let earlier = crate::engine::exec::blocking(move || stored.batches.collect::<Result<Vec<_>>>()).await?;
            for batch in &mut batches {
                *batch = crate::convert::cast_batch(batch, &target)?;
            }
            batches.splice(0..0, earlier);
            schema = target;
            inputs.push(old.handle.to_string());
        }
        let handle = Handle::random();
        let lineage = Lineage { op: "ingest".into(), params: json!({"table": name}), inputs };
        let meta = self.engine.store_batches(ctx, handle, Some(name.to_string()), lineage, schema, batches).await?;
        if pin {
            catalog.set_pinned(ctx, &meta.handle, true).await?;
        }
        crate::engine::names::bind_live(catalog, ctx, name, &meta.handle).await?;
        // The replaced version expires with its TTL instead of living on pinned.
        if let Some(old) = existing.filter(|old| old.pinned) {
            catalog.set_pinned(ctx, &old.handle, false).await?;
        }
        Ok(rows as i64)
    }

    /// The caller's tables with their schemas, by name.
    pub async fn tables(&self, ctx: &RequestContext) -> Result<Vec<(String, SchemaRef)>> {
        let catalog = self.engine.catalog();
        let mut tables = Vec::new();
        for (name, meta) in crate::engine::names::named(catalog, ctx).await? {
            match catalog.schema(ctx, &meta.handle).await {
                Ok(schema) => tables.push((name, schema)),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Declared datasets shadow named results of the same name.
        let datasets: Vec<String> = self.engine.data().datasets().visible(ctx).map(|(n, _)| n.to_string()).collect();
        tables.retain(|(name, _)| !datasets.contains(name));
        for name in datasets {
            match self.engine.dataset_schema(ctx, &name).await {
                Ok(schema) => tables.push((name, schema)),
                // No files yet: not a table to query.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(tables)
    }
}

#[cfg(test)]
mod tests {
    use super::{DataFusionError, Error, number_placeholders, sql_error};

    #[test]
    fn query_errors_are_mapped_by_their_root_cause() {
        let unreachable = || object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        // A store that cannot be reached, directly or wrapped, is UNAVAILABLE.
        assert!(matches!(sql_error(DataFusionError::ObjectStore(Box::new(unreachable()))), Error::Store { .. }));
        let wrapped =
            DataFusionError::Context("scan".into(), Box::new(DataFusionError::External(Box::new(unreachable()))));
        assert!(matches!(sql_error(wrapped), Error::Store { .. }));
        let missing = object_store::Error::NotFound { path: "results/x.arrow".into(), source: "gone".into() };
        assert!(matches!(sql_error(DataFusionError::ObjectStore(Box::new(missing))), Error::NotFound(_)));
        // The query's own mistakes are INVALID_ARGUMENT; DataFusion's own faults INTERNAL.
        assert!(matches!(sql_error(DataFusionError::Plan("no column x".into())), Error::InvalidArgument(_)));
        assert!(matches!(sql_error(DataFusionError::Internal("bug".into())), Error::Internal(_)));
        assert!(matches!(sql_error(DataFusionError::ResourcesExhausted("memory".into())), Error::ResourceExhausted(_)));
        // Held by two consumers of one stream, the error is classified by reference.
        let shared = std::sync::Arc::new(DataFusionError::ObjectStore(Box::new(unreachable())));
        let _other_consumer = shared.clone();
        assert!(matches!(sql_error(DataFusionError::Shared(shared)), Error::Store { .. }));
        let ours = DataFusionError::External(Box::new(Error::NotFound("table t".into())));
        assert!(matches!(sql_error(ours), Error::NotFound(_)));
    }

    #[test]
    fn question_marks_become_numbered_parameters() {
        assert_eq!(
            number_placeholders("SELECT a FROM t WHERE a > ? AND b = ?").unwrap(),
            "SELECT a FROM t WHERE a > $1 AND b = $2"
        );
        assert_eq!(
            number_placeholders("SELECT '?', 'it''s ?' AS \"q?\"\nFROM t -- why?\nWHERE x = ?").unwrap(),
            "SELECT '?', 'it''s ?' AS \"q?\"\nFROM t -- why?\nWHERE x = $1"
        );
        assert_eq!(number_placeholders("SELECT 'é', ?").unwrap(), "SELECT 'é', $1");
        assert_eq!(number_placeholders("SELECT $1").unwrap(), "SELECT $1");
    }
}
