//! The schema a query sees: the caller's named datasets, resolved when the planner asks for them.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;

use super::STORE_URL;
use crate::context::RequestContext;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::store::ResultMeta;

/// A tenant's tables, looked up by name in the shared store as the planner meets them.
pub struct TenantSchema {
    engine: Arc<Engine>,
    ctx: RequestContext,
    resolved: Arc<Mutex<Resolved>>,
}

/// What a query's table names resolved to: results, and the identities of the datasets' files
/// (so that a changed dataset gives a new result key).
#[derive(Default, Clone)]
pub struct Resolved {
    /// Named results.
    pub handles: Vec<Handle>,
    /// Datasets, as `name:identity`.
    pub files: Vec<String>,
}

impl fmt::Debug for TenantSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantSchema").field("tenant", &self.ctx.tenant()).finish_non_exhaustive()
    }
}

fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl TenantSchema {
    /// The tables of the request's tenant; every result a name resolves to is recorded in `resolved`.
    pub fn new(engine: Arc<Engine>, ctx: RequestContext, resolved: Arc<Mutex<Resolved>>) -> Self {
        TenantSchema { engine, ctx, resolved }
    }

    /// A declared dataset as a listing table over the data root, hive partitions pruned.
    async fn dataset(&self, name: &str) -> Result<Arc<dyn TableProvider>> {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::datasource::file_format::FileFormat;
        use datafusion::datasource::file_format::csv::CsvFormat;
        use datafusion::datasource::file_format::parquet::ParquetFormat;

        let table = self.engine.data().table(&self.ctx, name).await?;
        self.resolved.lock().expect("sql lock").files.push(format!("{name}:{}", table.identity));
        let dataset = &table.dataset;
        let (format, extension): (Arc<dyn FileFormat>, &str) = match dataset.format {
            crate::data::files::Format::Parquet => (Arc::new(ParquetFormat::default()), ".parquet"),
            crate::data::files::Format::Ipc => (Arc::new(ArrowFormat), ""),
            crate::data::files::Format::Csv => {
                let csv = dataset.csv.clone().unwrap_or_default();
                let format =
                    CsvFormat::default().with_has_header(csv.has_header).with_delimiter(csv.separator.as_bytes()[0]);
                (Arc::new(format), ".csv")
            }
        };
        let partitions = table
            .partitions
            .iter()
            .map(|(k, integer)| (k.clone(), if *integer { DataType::Int64 } else { DataType::Utf8 }))
            .collect();
        let options = ListingOptions::new(format).with_file_extension(extension);
        let location =
            |url: &str| ListingTableUrl::parse(url).map_err(|e| Error::Internal(format!("dataset location: {e}")));
        // The columns come from the first file's footer alone (as in Polars), with a session that
        // reaches the data root: reading every footer to plan would read every partition.
        let session = datafusion::prelude::SessionContext::new();
        if let Some((root, store)) = self.engine.data().object_store() {
            let root = url::Url::parse(&root).map_err(|e| Error::Internal(format!("data root: {e}")))?;
            session.register_object_store(&root, store);
        }
        let schema = options
            .infer_schema(&session.state(), &location(&table.first_file)?)
            .await
            .map_err(|e| Error::InvalidArgument(format!("dataset `{name}`: {e}")))?;
        let config = ListingTableConfig::new(location(&table.url)?)
            .with_listing_options(options.with_table_partition_cols(partitions))
            .with_schema(schema);
        let table = ListingTable::try_new(config).map_err(|e| Error::Internal(format!("table: {e}")))?;
        Ok(Arc::new(table))
    }

    async fn provider(&self, meta: &ResultMeta) -> Result<Arc<dyn TableProvider>> {
        let catalog = self.engine.catalog();
        let schema = catalog.schema(&self.ctx, &meta.handle).await?;
        match self.engine.store().table_file(&meta.handle) {
            // DataFusion reads the IPC file from the store itself.
            Some(file) => {
                let url = ListingTableUrl::parse(format!("{STORE_URL}/{}", file.path))
                    .map_err(|e| Error::Internal(format!("table location: {e}")))?;
                let options = ListingOptions::new(Arc::new(ArrowFormat)).with_file_extension(file.extension);
                let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
                let table = ListingTable::try_new(config).map_err(|e| Error::Internal(format!("table: {e}")))?;
                Ok(Arc::new(table))
            }
            // In memory: the stored frame's buffers, shared.
            None => {
                let stored = catalog.open(&self.ctx, &meta.handle).await?;
                let batches = crate::engine::exec::blocking(move || stored.batches.collect::<Result<Vec<_>>>()).await?;
                let table =
                    MemTable::try_new(schema, vec![batches]).map_err(|e| Error::Internal(format!("table: {e}")))?;
                Ok(Arc::new(table))
            }
        }
    }
}

#[async_trait::async_trait]
impl SchemaProvider for TenantSchema {
    fn table_names(&self) -> Vec<String> {
        // Names live in the shared store and are listed asynchronously (GetTables); the planner
        // only needs `table`.
        Vec::new()
    }

    async fn table(&self, name: &str) -> std::result::Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let lookup = async {
            // A declared dataset, if the tenant may use it; else a named result.
            if self.engine.data().datasets().get(&self.ctx, name).is_ok() {
                return self.dataset(name).await.map(Some);
            }
            let Some(meta) = crate::engine::names::resolve_live(self.engine.catalog(), &self.ctx, name).await? else {
                return Ok(None);
            };
            let provider = self.provider(&meta).await?;
            self.resolved.lock().expect("sql lock").handles.push(meta.handle.clone());
            Ok(Some(provider))
        };
        lookup.await.map_err(external)
    }

    fn table_exist(&self, _name: &str) -> bool {
        false
    }
}
