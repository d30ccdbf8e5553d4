//! Sinks: a pipeline's result written to the data root as Parquet, Arrow IPC or CSV files,
//! streamed by Polars' engine without collecting the result in memory.
//!
//! Writing needs the operator's grant: `POLARWAY_DATA_WRITABLE` for paths, a dataset's own
//! `writable` for datasets. Without `partition_by` a path names one file; with it, a directory
//! of hive partitions (`key=value/00000000.parquet`). A dataset is always a directory.
//!
//! A sink writes under a hidden temporary directory beside its target (`.polarway-sink-<id>`,
//! which scans skip), then publishes:
//! - on a local root, by renaming: a reader sees the old output or the whole new one;
//! - on an object store, by copying each finished file to its name and deleting the temporary
//!   ones: there is no multi-object rename, so a reader listing during the copy may see some of
//!   the new files, each one whole, never a half-written file.
//!
//! Its identity is the request (plan, target, options, and the files its scans listed). A
//! marker beside the output (`_<name>.polarway-sink.json`, hidden from scans) records it, so a
//! retried sink finds its own output and answers as the first one did, with no duplicate files.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::Data;
use super::root::{self, Root};
use crate::context::RequestContext;
use crate::data::files::Format;
use crate::error::{Error, Result};

/// What to do when the target exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse (ALREADY_EXISTS), unless it is this same sink's output.
    #[default]
    ErrorIfExists,
    /// Replace it.
    Overwrite,
}

/// A sink, as the client sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// `parquet`, `ipc` or `csv`.
    pub format: Format,
    /// A path under the data root (a file, or a directory with `partition_by`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Or a writable dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Columns that make hive directories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// When the target exists.
    #[serde(default)]
    pub mode: Mode,
    /// CSV: field separator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// CSV: write a header line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_header: Option<bool>,
}

/// A file a sink wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// Under the data root.
    pub path: String,
    /// Its size.
    pub bytes: u64,
}

/// What a sink wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Written {
    /// The target, as the client named it (a path, or `dataset:<name>`).
    pub target: String,
    /// The files, sorted.
    pub files: Vec<WrittenFile>,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Where a sink writes, checked against the grants.
#[derive(Debug, Clone)]
pub struct Target {
    /// What the client named.
    shown: String,
    /// The output under the root: a file, or a directory.
    path: String,
    /// Whether `path` is a directory (partitioned, or a dataset).
    directory: bool,
}

impl Target {
    fn parent_and_name(&self) -> (String, String) {
        match self.path.rsplit_once('/') {
            Some((parent, name)) => (parent.to_string(), name.to_string()),
            None => (String::new(), self.path.clone()),
        }
    }

    fn join(parent: &str, name: &str) -> String {
        if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
    }

    /// The hidden directory this sink writes under before it publishes.
    fn temp(&self, id: &str) -> String {
        let (parent, _) = self.parent_and_name();
        Target::join(&parent, &format!(".polarway-sink-{}", &id[..16]))
    }

    /// Where a replaced local directory is moved while the new one takes its name.
    fn aside(&self, id: &str) -> String {
        let (parent, _) = self.parent_and_name();
        Target::join(&parent, &format!(".polarway-replaced-{}", &id[..16]))
    }

    /// The marker that records which sink made the output.
    fn marker(&self) -> String {
        let (parent, name) = self.parent_and_name();
        Target::join(&parent, &format!("_{name}.polarway-sink.json"))
    }

    /// Where Polars writes, under the temporary directory: the file, or the partitions' base.
    fn staged(&self, temp: &str) -> String {
        if self.directory {
            temp.to_string()
        } else {
            let (_, name) = self.parent_and_name();
            Target::join(temp, &name)
        }
    }
}

/// The marker's contents.
#[derive(Serialize, Deserialize)]
struct Marker {
    id: String,
    written: Written,
}

impl Data {
    /// The target of `spec`, if the request may write it: PERMISSION_DENIED without the grant,
    /// NOT_FOUND for a dataset the tenant cannot see.
    pub fn sink_target(&self, ctx: &RequestContext, spec: &SinkSpec) -> Result<Target> {
        let root = self.root()?;
        if let Some(sep) = &spec.separator
            && (spec.format != Format::Csv || sep.len() != 1)
        {
            return Err(Error::invalid("`separator`: one byte, for a CSV sink"));
        }
        match (&spec.path, &spec.dataset) {
            (Some(path), None) => {
                let located = root::locate(path)?;
                if located.pattern.is_some() {
                    return Err(Error::invalid("`path`: a sink writes to a path, not a glob"));
                }
                if !root.writable {
                    return Err(Error::PermissionDenied(
                        "the data root is read-only (the operator grants writes with POLARWAY_DATA_WRITABLE)".into(),
                    ));
                }
                Ok(Target { shown: located.path.clone(), path: located.path, directory: !spec.partition_by.is_empty() })
            }
            (None, Some(name)) => {
                let dataset = self.datasets.get(ctx, name)?;
                if !dataset.writable {
                    return Err(Error::PermissionDenied(format!("the dataset `{name}` is read-only")));
                }
                if dataset.format != spec.format {
                    return Err(Error::invalid(format!(
                        "the dataset `{name}` holds {} files, not {}",
                        dataset.format.name(),
                        spec.format.name()
                    )));
                }
                let located = root::locate(&dataset.path)?;
                Ok(Target { shown: format!("dataset:{name}"), path: located.prefix, directory: true })
            }
            _ => Err(Error::invalid("a sink names a `path` or a `dataset`, not both")),
        }
    }

    /// The earlier answer of the sink `id`, if its output is published at `target`.
    pub async fn published(&self, target: &Target, id: &str) -> Result<Option<Written>> {
        let (store, marker) = self.root()?.object(&target.marker());
        match store.get(&marker).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|e| io_error(target, e))?;
                let marker: Marker = serde_json::from_slice(&bytes)
                    .map_err(|_| Error::Internal(format!("`{}`: its sink marker does not parse", target.shown)))?;
                Ok((marker.id == id).then_some(marker.written))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(target, e)),
        }
    }

    /// Runs the sink of `lf` (on the calling thread: an operation's slot) and publishes it.
    pub fn write(
        &self,
        runtime: &tokio::runtime::Handle,
        lf: LazyFrame,
        spec: &SinkSpec,
        target: &Target,
        id: &str,
    ) -> Result<Written> {
        let root = self.root()?;
        let temp = target.temp(id);
        runtime.block_on(remove_all(root, &temp, target))?;
        if spec.mode == Mode::ErrorIfExists && runtime.block_on(exists(root, target))? {
            return Err(Error::AlreadyExists(format!(
                "`{}` exists (write with mode `overwrite` to replace it)",
                target.shown
            )));
        }
        let staged = target.staged(&temp);
        let location = root.polars_location(&staged);
        let cloud = root.cloud_options()?;
        let format = match spec.format {
            Format::Parquet => FileWriteFormat::Parquet(Arc::new(ParquetWriteOptions::default())),
            Format::Ipc => FileWriteFormat::Ipc(IpcWriterOptions::default()),
            Format::Csv => {
                let mut options =
                    CsvWriterOptions { include_header: spec.include_header.unwrap_or(true), ..Default::default() };
                if let Some(sep) = &spec.separator {
                    Arc::make_mut(&mut options.serialize_options).separator = sep.as_bytes()[0];
                }
                FileWriteFormat::Csv(options)
            }
        };
        let destination = if target.directory {
            let keys = spec.partition_by.iter().map(|c| col(c.as_str())).collect();
            SinkDestination::Partitioned {
                base_path: PlRefPath::new(location.as_str()),
                file_path_provider: None,
                partition_strategy: if spec.partition_by.is_empty() {
                    PartitionStrategy::FileSize
                } else {
                    PartitionStrategy::Keyed { keys, include_keys: false, keys_pre_grouped: false }
                },
                max_rows_per_file: IdxSize::MAX,
                approximate_bytes_per_file: u64::MAX,
            }
        } else {
            SinkDestination::File { target: SinkTarget::Path(PlRefPath::new(location.as_str())) }
        };
        let args = UnifiedSinkArgs { mkdir: true, cloud_options: cloud.map(Arc::new), ..Default::default() };
        let written = lf.sink(destination, format, args)?.collect_with_engine(Engine::Streaming);
        if let Err(e) = written {
            let _ = runtime.block_on(remove_all(root, &temp, target));
            return Err(e.into());
        }
        let files = runtime.block_on(list_all(root, &temp, target))?;
        let rows = count_rows(root, spec, &files, &temp)?;
        let published = runtime.block_on(publish(root, spec, target, &temp, files, rows, id));
        if published.is_err() {
            let _ = runtime.block_on(remove_all(root, &temp, target));
        }
        published
    }
}

fn io_error(target: &Target, e: object_store::Error) -> Error {
    tracing::debug!(target = %target.shown, error = %e, "data root write failed");
    match e {
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            Error::PermissionDenied(format!("`{}`: the data root refused the write", target.shown))
        }
        other => Error::store(format!("the data root: cannot write `{}`", target.shown), other),
    }
}

/// Every object under `prefix` (a file's own path, or a directory's), with its size.
async fn list_all(root: &Root, prefix: &str, target: &Target) -> Result<Vec<(String, u64)>> {
    let (store, path) = root.object(prefix);
    let base = root.object("").1;
    let mut out = Vec::new();
    let mut listing = store.list(Some(&path));
    while let Some(meta) = listing.try_next().await.map_err(|e| io_error(target, e))? {
        let full = meta.location.as_ref();
        let relative = full.strip_prefix(base.as_ref()).unwrap_or(full).trim_start_matches('/').to_string();
        out.push((relative, meta.size));
    }
    if out.is_empty()
        && let Ok(meta) = store.head(&path).await
    {
        out.push((prefix.to_string(), meta.size));
    }
    out.sort();
    Ok(out)
}

async fn exists(root: &Root, target: &Target) -> Result<bool> {
    Ok(!list_all(root, &target.path, target).await?.is_empty())
}

async fn remove_all(root: &Root, prefix: &str, target: &Target) -> Result<()> {
    // A local root removes the directory (or file) at once, its empty directories included.
    if let Some(local) = root.local_path(prefix) {
        let removed = if local.is_dir() { std::fs::remove_dir_all(&local) } else { std::fs::remove_file(&local) };
        return match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::store(format!("the data root: cannot remove `{}`", target.shown), e))
            }
            _ => Ok(()),
        };
    }
    let (store, _) = root.object(prefix);
    for (path, _) in list_all(root, prefix, target).await? {
        let (_, object) = root.object(&path);
        match store.delete(&object).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(io_error(target, e)),
        }
    }
    Ok(())
}

/// Rows in the staged files, from Polars' own reader (Parquet and IPC: their footers).
fn count_rows(root: &Root, spec: &SinkSpec, files: &[(String, u64)], temp: &str) -> Result<u64> {
    // The reader's options; each file's location is passed to `lazy` on its own.
    let reader = super::scan::ScanSpec {
        format: spec.format,
        path: temp.to_string(),
        hive_partitioning: Some(false),
        columns: None,
        n_rows: None,
        csv: (spec.format == Format::Csv).then(|| super::scan::CsvSpec {
            has_header: spec.include_header.unwrap_or(true),
            separator: spec.separator.clone().unwrap_or_else(|| ",".into()),
            ..Default::default()
        }),
    };
    let cloud = root.cloud_options()?;
    let mut total = 0u64;
    for (path, _) in files {
        let lf = super::scan::lazy(&reader, &root.polars_location(path), false, cloud.clone())?;
        let n = lf.select([len().cast(DataType::UInt64)]).collect()?;
        total += n.columns()[0].u64()?.get(0).unwrap_or(0);
    }
    Ok(total)
}

/// Moves the staged files to the target (replacing what was there), then writes the marker.
async fn publish(
    root: &Root,
    spec: &SinkSpec,
    target: &Target,
    temp: &str,
    staged: Vec<(String, u64)>,
    rows: u64,
    id: &str,
) -> Result<Written> {
    let (store, _) = root.object(&target.path);
    let moved: Vec<(String, String, u64)> = staged
        .into_iter()
        .map(|(path, bytes)| {
            let rest = path.strip_prefix(temp).unwrap_or(&path).trim_start_matches('/');
            let last = if target.directory { Target::join(&target.path, rest) } else { target.path.clone() };
            (path, last, bytes)
        })
        .collect();
    match (root.local_path(temp), root.local_path(&target.path)) {
        // A local directory is published by one rename, the old one moved aside first.
        (Some(staged_dir), Some(final_dir)) if target.directory => {
            let aside = root.local_path(&target.aside(id)).expect("a local root");
            let replaced = spec.mode == Mode::Overwrite && final_dir.exists();
            if replaced {
                std::fs::rename(&final_dir, &aside)
                    .map_err(|e| Error::store("the data root: cannot replace the output", e))?;
            }
            if let Some(parent) = final_dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::store("the data root: cannot create the output's directory", e))?;
            }
            std::fs::rename(&staged_dir, &final_dir)
                .map_err(|e| Error::store("the data root: cannot publish the output", e))?;
            if replaced {
                let _ = std::fs::remove_dir_all(&aside);
            }
        }
        _ => {
            if spec.mode == Mode::Overwrite {
                remove_all(root, &target.path, target).await?;
            }
            for (from, to, _) in &moved {
                let (_, from) = root.object(from);
                let (_, to) = root.object(to);
                store.rename(&from, &to).await.map_err(|e| io_error(target, e))?;
            }
        }
    }
    let files: Vec<WrittenFile> = moved.into_iter().map(|(_, path, bytes)| WrittenFile { path, bytes }).collect();
    let bytes = files.iter().map(|f| f.bytes).sum();
    let written = Written { target: target.shown.clone(), files, rows, bytes };
    let marker =
        serde_json::to_vec(&Marker { id: id.to_string(), written: written.clone() }).expect("marker serialises");
    let (_, marker_path) = root.object(&target.marker());
    store.put(&marker_path, marker.into()).await.map_err(|e| io_error(target, e))?;
    if let Some(dir) = root.local_path(temp) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(written)
}
