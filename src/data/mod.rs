//! Where users' data lives: the data root, the datasets declared on it, scans that read it as
//! plan leaves, and sinks that write pipelines' results back to it.
//!
//! The root is a local directory (`POLARWAY_DATA_DIR`) or an object store
//! (`POLARWAY_DATA_URL`, with credentials from the environment as for the state store). Plans
//! name files relative to it ([`root`]) or by a dataset's name ([`datasets`]). A scan is listed
//! here (bounded by `POLARWAY_MAX_SCAN_FILES` and `POLARWAY_MAX_SCAN_BYTES`) and becomes Polars'
//! own lazy scan ([`scan`]), which the optimiser pushes projections, predicates, slices and hive
//! partition filters into. Reading happens when the plan runs, on Polars' streaming engine.

pub mod datasets;
/// File reads and writes under the data root: `read_*` and `write_*`.
pub mod files;
pub mod root;
pub mod scan;
pub mod sink;

use std::sync::Arc;

use polars::prelude::LazyFrame;
use sha2::{Digest, Sha256};

use self::datasets::Datasets;
use self::root::{Listing, Located, Root};
use self::scan::ScanSpec;
use crate::context::RequestContext;
use crate::error::{Error, Result};
use crate::limits::Limit;
use crate::ops::Source;

/// The data root, its datasets and the scan limits.
pub struct Data {
    root: Option<Root>,
    datasets: Datasets,
    max_files: usize,
    max_bytes: u64,
}

/// A scan leaf, opened: its lazy plan and the identity of the files it lists.
pub struct Opened {
    /// Polars' scan.
    pub lf: LazyFrame,
    /// A digest of the listed files' paths, sizes and versions.
    pub identity: String,
}

impl Data {
    /// The data of a worker with `root` (if any) and `datasets`.
    pub fn new(root: Option<Root>, datasets: Datasets, max_files: usize, max_bytes: u64) -> Data {
        Data { root, datasets, max_files, max_bytes }
    }

    /// No root, no datasets: every scan is refused.
    pub fn none() -> Data {
        Data::new(None, Datasets::default(), 0, 0)
    }

    /// The root, or PERMISSION_DENIED when none is configured.
    pub fn root(&self) -> Result<&Root> {
        self.root.as_ref().ok_or_else(|| {
            Error::PermissionDenied(
                "scans and sinks are disabled (POLARWAY_DATA_URL or POLARWAY_DATA_DIR is not set)".into(),
            )
        })
    }

    /// `e` as a client may see it: the data root's location (a directory, a URL), which Polars'
    /// and DataFusion's messages about a file carry, becomes the path under the root.
    pub fn scrub(&self, e: Error) -> Error {
        let Some(root) = &self.root else { return e };
        let (base, url) = (root.polars_location(""), root.url());
        e.map_message(|m| m.replace(&url, "").replace(&base, ""))
    }

    /// The declared datasets.
    pub fn datasets(&self) -> &Datasets {
        &self.datasets
    }

    /// What a scan or dataset leaf reads, as the request's tenant may see it.
    pub fn spec(&self, ctx: &RequestContext, leaf: &Source) -> Result<ScanSpec> {
        match leaf {
            Source::Scan(spec) => Ok(spec.clone()),
            Source::Dataset(name) => Ok(self.datasets.get(ctx, name)?.scan()),
            _ => Err(Error::Internal("not a scan".into())),
        }
    }

    /// Lists what a scan reads, within the file and byte limits.
    async fn list(&self, spec: &ScanSpec) -> Result<(Located, Listing)> {
        spec.check()?;
        let root = self.root()?;
        let located = root::locate(&spec.path)?;
        let listing = root.list(&located, self.max_files.max(1)).await?;
        let bytes: u64 = listing.files.iter().map(|f| f.size).sum();
        if self.max_bytes > 0 && bytes > self.max_bytes {
            return Err(Limit::ScanBytes.exceeded(format!(
                "`{}` holds {bytes} bytes, more than the {} a query may scan",
                spec.path, self.max_bytes
            )));
        }
        Ok((located, listing))
    }

    /// Lists a scan or dataset leaf and builds its lazy plan.
    pub async fn open(&self, ctx: &RequestContext, leaf: &Source) -> Result<Opened> {
        let spec = self.spec(ctx, leaf)?;
        let (located, listing) = self.list(&spec).await?;
        let root = self.root()?;
        let hive = spec.hive_partitioning.unwrap_or(listing.directory);
        let mut location = root.polars_location(&located.path);
        if listing.directory {
            location.push('/');
        }
        let lf = scan::lazy(&spec, &location, hive, root.cloud_options()?)?;
        Ok(Opened { lf, identity: identity(&listing) })
    }
}

/// A dataset as SQL reads it: where, in which format, and its hive partition columns.
pub struct Table {
    /// The dataset's declaration.
    pub dataset: datasets::Dataset,
    /// The URL DataFusion lists (a directory with a trailing slash, a file, or a glob).
    pub url: String,
    /// The URL of its first file, whose footer gives the table's columns.
    pub first_file: String,
    /// Hive partition columns in path order, and whether every value is an integer.
    pub partitions: Vec<(String, bool)>,
    /// A digest of the listed files' paths, sizes and versions.
    pub identity: String,
}

impl Data {
    /// The dataset `name` for SQL, listed now (so its partition columns are known).
    pub async fn table(&self, ctx: &RequestContext, name: &str) -> Result<Table> {
        let dataset = self.datasets.get(ctx, name)?.clone();
        let (located, listing) = self.list(&dataset.scan()).await?;
        let root = self.root()?;
        let mut url = format!("{}{}", root.url(), located.path);
        if listing.directory {
            url.push('/');
        }
        let mut partitions: Vec<(String, bool)> = Vec::new();
        if dataset.hive_partitioning {
            for file in &listing.files {
                let under = file.path.strip_prefix(&located.prefix).unwrap_or(&file.path).trim_start_matches('/');
                let dirs = under.rsplit_once('/').map_or("", |(d, _)| d);
                for (i, (key, value)) in dirs.split('/').filter_map(|c| c.split_once('=')).enumerate() {
                    let integer = value.parse::<i64>().is_ok();
                    match partitions.get_mut(i) {
                        Some((k, int)) if k == key => *int &= integer,
                        Some(_) => {
                            return Err(Error::invalid(format!(
                                "the dataset `{name}` has files at different partition levels"
                            )));
                        }
                        None => partitions.push((key.to_string(), integer)),
                    }
                }
            }
        }
        let first_file = format!("{}{}", root.url(), listing.files[0].path);
        Ok(Table { dataset, url, first_file, partitions, identity: identity(&listing) })
    }

    /// The root's URL and object store, for DataFusion to read datasets with (none for a local
    /// root, which DataFusion reads itself).
    pub fn object_store(&self) -> Option<(String, Arc<dyn object_store::ObjectStore>)> {
        let root = self.root.as_ref()?;
        (!root.is_local()).then(|| (root.url(), root.store()))
    }
}

/// A digest of a listing's files: their paths, sizes and versions.
fn identity(listing: &Listing) -> String {
    hex(&Sha256::digest(serde_json::to_vec(&listing.files).expect("file ids serialise")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
