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
    resolved: Arc<Mutex<Vec<Handle>>>,
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
    pub fn new(engine: Arc<Engine>, ctx: RequestContext, resolved: Arc<Mutex<Vec<Handle>>>) -> Self {
        TenantSchema { engine, ctx, resolved }
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
                let batches = crate::exec::blocking(move || stored.batches.collect::<Result<Vec<_>>>()).await?;
                let table = MemTable::try_new(schema, vec![batches]).map_err(|e| Error::Internal(format!("table: {e}")))?;
                Ok(Arc::new(table))
            }
        }
    }
}

#[tonic::async_trait]
impl SchemaProvider for TenantSchema {
    fn table_names(&self) -> Vec<String> {
        // Names live in the shared store and are listed asynchronously (GetTables); the planner
        // only needs `table`.
        Vec::new()
    }

    async fn table(&self, name: &str) -> std::result::Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let lookup = async {
            let Some(meta) = crate::names::resolve_live(self.engine.catalog(), &self.ctx, name).await? else {
                return Ok(None);
            };
            let provider = self.provider(&meta).await?;
            self.resolved.lock().expect("sql lock").push(meta.handle.clone());
            Ok(Some(provider))
        };
        lookup.await.map_err(external)
    }

    fn table_exist(&self, _name: &str) -> bool {
        false
    }
}
