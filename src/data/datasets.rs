//! Named datasets, declared by the operator in `POLARWAY_DATASETS_FILE`.
//!
//! The file is JSON: the worker already speaks it on every request, an operator's tooling
//! (jq, any language) writes it without a new parser, and the same object is what `ListFlights`
//! shows of a dataset. One object, name -> dataset:
//!
//! ```json
//! {
//!   "lineitem": {"path": "tpch/lineitem.parquet", "format": "parquet"},
//!   "sales": {"path": "sales", "format": "parquet", "hive_partitioning": true,
//!             "tenants": ["acme"], "writable": true},
//!   "events": {"path": "events/*.csv", "format": "csv",
//!              "csv": {"separator": ";", "schema_overrides": {"ts": "datetime[us]"}}}
//! }
//! ```
//!
//! A name is a table name (lower case, digits, `_`). `tenants` lists who may use it (absent:
//! every tenant); to anyone else it does not exist (NOT_FOUND, as another tenant's handle).
//! `writable` lets sinks write it, on a root that is itself writable.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::root;
use super::scan::{CsvSpec, ScanSpec};
use crate::context::RequestContext;
use crate::data::files::Format;
use crate::error::{Error, Result};

/// One declared dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// A file, directory or glob under the data root.
    pub path: String,
    /// `parquet`, `ipc` or `csv`.
    pub format: Format,
    /// `key=value` directories are columns.
    #[serde(default)]
    pub hive_partitioning: bool,
    /// CSV options, schema hints included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvSpec>,
    /// The tenants that may use it; absent, every tenant.
    #[serde(default, skip_serializing)]
    pub tenants: Option<Vec<String>>,
    /// Sinks may write it.
    #[serde(default)]
    pub writable: bool,
}

impl Dataset {
    /// The scan that reads it.
    pub fn scan(&self) -> ScanSpec {
        ScanSpec {
            format: self.format,
            path: self.path.clone(),
            hive_partitioning: Some(self.hive_partitioning),
            columns: None,
            n_rows: None,
            csv: self.csv.clone(),
        }
    }

    fn allows(&self, ctx: &RequestContext) -> bool {
        match &self.tenants {
            None => true,
            Some(tenants) => ctx.tenant().is_some_and(|t| tenants.iter().any(|a| a == t)),
        }
    }
}

/// The declared datasets, by name.
#[derive(Debug, Clone, Default)]
pub struct Datasets(BTreeMap<String, Dataset>);

impl Datasets {
    /// Reads and checks the datasets file; the error names the file's problem, for the operator.
    pub fn from_file(path: &Path) -> std::result::Result<Datasets, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("POLARWAY_DATASETS_FILE: cannot read {}: {e}", path.display()))?;
        Datasets::parse(&text).map_err(|e| format!("POLARWAY_DATASETS_FILE: {e}"))
    }

    /// Parses the file's JSON.
    pub fn parse(text: &[u8]) -> std::result::Result<Datasets, String> {
        let map: BTreeMap<String, Dataset> = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        for (name, dataset) in &map {
            if !crate::handle::is_valid_name(name) {
                return Err(format!("`{name}` is not a table name (lower case letters, digits and `_`)"));
            }
            root::locate(&dataset.path).map_err(|e| format!("`{name}`: {e}"))?;
            dataset.scan().check().map_err(|e| format!("`{name}`: {e}"))?;
        }
        Ok(Datasets(map))
    }

    /// The dataset `name`, if the request's tenant may use it; NOT_FOUND otherwise.
    pub fn get(&self, ctx: &RequestContext, name: &str) -> Result<&Dataset> {
        self.0.get(name).filter(|d| d.allows(ctx)).ok_or_else(|| Error::NotFound(format!("no dataset named `{name}`")))
    }

    /// The datasets the request's tenant may use.
    pub fn visible<'a>(&'a self, ctx: &'a RequestContext) -> impl Iterator<Item = (&'a str, &'a Dataset)> + 'a {
        self.0.iter().filter(|(_, d)| d.allows(ctx)).map(|(n, d)| (n.as_str(), d))
    }

    /// Whether any dataset is declared.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_checked_and_tenants_see_only_theirs() {
        let text =
            br#"{"sales": {"path": "sales", "format": "parquet", "hive_partitioning": true, "tenants": ["acme"]},
                        "open": {"path": "o/*.csv", "format": "csv", "csv": {"separator": ";"}}}"#;
        let sets = Datasets::parse(text).unwrap();
        let acme = RequestContext::new(Some("acme".into()), std::time::Duration::from_secs(1), "t");
        let other = RequestContext::new(Some("other".into()), std::time::Duration::from_secs(1), "t");
        assert!(sets.get(&acme, "sales").is_ok());
        assert!(matches!(sets.get(&other, "sales"), Err(Error::NotFound(_))));
        assert_eq!(sets.visible(&other).map(|(n, _)| n).collect::<Vec<_>>(), ["open"]);
        for bad in [
            r#"{"Bad": {"path": "x", "format": "csv"}}"#,
            r#"{"x": {"path": "../x", "format": "csv"}}"#,
            r#"{"x": {"path": "x", "format": "parquet", "csv": {}}}"#,
            r#"{"x": {"path": "x", "format": "csv", "extra": 1}}"#,
        ] {
            assert!(Datasets::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
