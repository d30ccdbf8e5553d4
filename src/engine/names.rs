//! Named datasets: a tenant's names for its results, the tables that Flight SQL queries.
//!
//! A name is bound by an upload with descriptor path `[name]`, by the `name` action, or by Flight
//! SQL ingest. Bindings are small documents in the shared store (`names/<tenant>/<name>.json`),
//! so every worker on the store resolves every name, and each tenant has its own namespace. A
//! name follows its result: when the result expires or is dropped the name no longer resolves.

use serde::{Deserialize, Serialize};

use crate::context::RequestContext;
use crate::engine::results::Catalog;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::store::{DocKey, DocSet, DocumentStore, ResultMeta};

/// What a name document holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Binding {
    handle: Handle,
}

pub use crate::handle::{check_name as check, is_valid_name as is_valid};

/// Binds `tenant`'s dataset `name` to `handle`, replacing any earlier binding.
pub fn bind(store: &dyn DocumentStore, tenant: Option<&str>, name: &str, handle: &Handle) -> Result<()> {
    check(name)?;
    let doc = serde_json::to_vec(&Binding { handle: handle.clone() }).map_err(|e| Error::Internal(e.to_string()))?;
    store.put_doc(&key(tenant, name), doc, false)?;
    Ok(())
}

/// The handle `name` is bound to for `tenant`, if any. Blocking.
pub fn resolve(store: &dyn DocumentStore, tenant: Option<&str>, name: &str) -> Result<Option<Handle>> {
    if !is_valid(name) {
        return Ok(None);
    }
    match store.get_doc(&key(tenant, name))? {
        None => Ok(None),
        Some(bytes) => {
            let binding: Binding = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Internal(format!("name `{name}`: unreadable binding: {e}")))?;
            Ok(Some(binding.handle))
        }
    }
}

/// Every name `tenant` has bound, sorted. Blocking.
pub fn list(store: &dyn DocumentStore, tenant: Option<&str>) -> Result<Vec<String>> {
    let mut names: Vec<String> = store
        .list_docs(&DocSet::Names(tenant.map(str::to_string)))?
        .into_iter()
        .filter_map(|key| match key {
            DocKey::Name { name, .. } if is_valid(&name) => Some(name),
            _ => None,
        })
        .collect();
    names.sort();
    Ok(names)
}

fn key(tenant: Option<&str>, name: &str) -> DocKey {
    DocKey::Name { tenant: tenant.map(str::to_string), name: name.to_string() }
}

/// Binds `name` to a result the request can see, and returns the result's meta.
pub async fn bind_live(catalog: &Catalog, ctx: &RequestContext, name: &str, handle: &Handle) -> Result<ResultMeta> {
    check(name)?;
    let meta = catalog.live_meta(ctx, handle).await?;
    let (tenant, name, h) = (ctx.tenant().map(str::to_string), name.to_string(), handle.clone());
    catalog.on_store(move |store| bind(store, tenant.as_deref(), &name, &h)).await?;
    Ok(meta)
}

/// The live result `name` names for the request's tenant, if any.
pub async fn resolve_live(catalog: &Catalog, ctx: &RequestContext, name: &str) -> Result<Option<ResultMeta>> {
    let (tenant, owned) = (ctx.tenant().map(str::to_string), name.to_string());
    match catalog.on_store(move |store| resolve(store, tenant.as_deref(), &owned)).await? {
        Some(handle) => catalog.existing(ctx, &handle).await,
        None => Ok(None),
    }
}

/// The request's tenant's named datasets whose results are live, by name.
pub async fn named(catalog: &Catalog, ctx: &RequestContext) -> Result<Vec<(String, ResultMeta)>> {
    let tenant = ctx.tenant().map(str::to_string);
    let all = catalog.on_store(move |store| list(store, tenant.as_deref())).await?;
    let mut named = Vec::new();
    for name in all {
        if let Some(meta) = resolve_live(catalog, ctx, &name).await? {
            named.push((name, meta));
        }
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_identifiers() {
        for good in ["trades", "_t", "t2_x", &"a".repeat(128)] {
            assert!(is_valid(good), "{good}");
        }
        for bad in ["", "2t", "Trades", "a-b", "a.b", "a/b", "../x", "a b", &"a".repeat(129)] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
