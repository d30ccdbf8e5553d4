//! Scans: what a plan leaf reads from a data root, and the lazy Polars plan that reads it.
//!
//! A [`ScanSpec`] is what a client sends: a format, a path (a file, a directory or a glob)
//! relative to the data root, and the reader's options. It is a plain value; opening it is
//! [`super::Data`]'s job. [`lazy`] turns a located scan into Polars' own scan node, so that the
//! optimiser pushes projections, predicates, slices and hive partition filters into the reader.

use std::sync::Arc;

use polars::io::cloud::CloudOptions;
use polars::polars_utils::slice_enum::Slice;
use polars::prelude::*;

use crate::data::files::Format;
use crate::error::{Error, Result};

pub use crate::ops::source::{CsvSpec, ScanSpec};

impl ScanSpec {
    /// Refuses options that do not fit the format, before anything is listed.
    pub fn check(&self) -> Result<()> {
        if self.csv.is_some() && self.format != Format::Csv {
            return Err(Error::invalid(format!("`csv`: options for a CSV scan, not {}", self.format.name())));
        }
        if let Some(csv) = &self.csv {
            if csv.separator.len() != 1 {
                return Err(Error::invalid("`separator`: must be one byte"));
            }
            for (name, dtype) in &csv.schema_overrides {
                crate::ops::expr::dtype(&format!("schema_overrides.{name}"), dtype)?;
            }
        }
        Ok(())
    }
}

/// File name prefixes that scans skip, in Polars and in the listing: hidden files, and what a
/// writer has not yet published.
pub const HIDDEN_PREFIXES: [&str; 2] = [".", "_"];

/// Polars' lazy scan of `location` (a local path or an object-store URL, as Polars names it),
/// with `cloud` the object store's options.
pub fn lazy(spec: &ScanSpec, location: &str, hive: bool, cloud: Option<CloudOptions>) -> Result<LazyFrame> {
    let sources = ScanSources::Paths(vec![PlRefPath::new(location)].into());
    let hidden: Arc<[PlSmallStr]> = HIDDEN_PREFIXES.iter().map(|p| PlSmallStr::from(*p)).collect();
    let args = UnifiedScanArgs {
        cloud_options: cloud,
        hive_options: if hive { HiveOptions::new_enabled() } else { HiveOptions::new_disabled() },
        hidden_file_prefix: Some(hidden),
        pre_slice: spec.n_rows.map(|n| Slice::Positive { offset: 0, len: n as usize }),
        ..UnifiedScanArgs::default()
    };
    let builder = match spec.format {
        Format::Parquet => DslBuilder::scan_parquet(sources, ParquetOptions::default(), args)?,
        Format::Ipc => DslBuilder::scan_ipc(sources, Default::default(), args)?,
        Format::Csv => {
            let csv = spec.csv.clone().unwrap_or_default();
            let parse = CsvParseOptions::default()
                .with_separator(csv.separator.as_bytes()[0])
                .with_try_parse_dates(csv.try_parse_dates)
                .with_null_values(
                    (!csv.null_values.is_empty())
                        .then(|| NullValues::AllColumns(csv.null_values.iter().map(|v| v.as_str().into()).collect())),
                );
            let overrides = if csv.schema_overrides.is_empty() {
                None
            } else {
                let mut schema = Schema::with_capacity(csv.schema_overrides.len());
                for (name, dtype) in &csv.schema_overrides {
                    schema.insert(name.as_str().into(), crate::ops::expr::dtype("schema_overrides", dtype)?);
                }
                Some(Arc::new(schema))
            };
            let options = CsvReadOptions::default()
                .with_has_header(csv.has_header)
                .with_parse_options(parse)
                .with_infer_schema_length(csv.infer_schema_length.or(Some(100)))
                .with_schema_overwrite(overrides);
            DslBuilder::scan_csv(sources, options, args)?
        }
    };
    let mut lf: LazyFrame = builder.build().into();
    if let Some(columns) = &spec.columns {
        lf = lf.select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>());
    }
    Ok(lf)
}
