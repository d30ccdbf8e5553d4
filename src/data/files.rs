//! File sources and sinks, confined to the data root.
//!
//! A client names files relative to `POLARWAY_DATA_DIR`. The path is resolved (following symlinks)
//! and must stay inside the root, or the request is PERMISSION_DENIED; without a root, file
//! operations are refused. Messages name the client's relative path, never the server's.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use crate::ops::source::Format;

/// `read_csv` / `read_parquet` / `read_ipc`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReadSpec {
    /// Path relative to the data root.
    pub path: String,
    /// CSV: the first line holds column names.
    #[serde(default = "yes")]
    pub has_header: bool,
    /// CSV: field separator (one byte).
    #[serde(default = "comma")]
    pub separator: String,
    /// Only these columns.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Only the first n rows.
    #[serde(default)]
    pub n_rows: Option<usize>,
}

/// `write_csv` / `write_parquet`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WriteSpec {
    /// The handle to write.
    pub input: crate::handle::Handle,
    /// Path relative to the data root; parent directories must exist.
    pub path: String,
}

fn yes() -> bool {
    true
}
fn comma() -> String {
    ",".into()
}

/// Resolves a client path inside `root`, refusing anything that escapes it.
pub fn resolve(root: Option<&Path>, path: &str, must_exist: bool) -> Result<PathBuf> {
    let root = root
        .ok_or_else(|| Error::PermissionDenied("file operations are disabled (POLARWAY_DATA_DIR is not set)".into()))?;
    let denied = || Error::PermissionDenied(format!("`{path}` is outside the data directory"));
    let rel = Path::new(path);
    if path.is_empty() || rel.is_absolute() {
        return Err(denied());
    }
    if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(denied());
    }
    let joined = root.join(rel);
    // Follow symlinks: the real location must be inside the root too.
    let resolved = if must_exist {
        joined.canonicalize().map_err(|_| Error::NotFound(format!("`{path}` does not exist")))?
    } else {
        let parent = joined.parent().ok_or_else(denied)?;
        let parent =
            parent.canonicalize().map_err(|_| Error::NotFound(format!("the directory of `{path}` does not exist")))?;
        let target = parent.join(joined.file_name().ok_or_else(denied)?);
        match target.canonicalize() {
            Ok(existing) => existing,
            Err(_) => target,
        }
    };
    if resolved.starts_with(root) { Ok(resolved) } else { Err(denied()) }
}

/// Reads a file into a frame; the file's size and modification time are part of the result key.
pub fn read(format: Format, spec: &ReadSpec, path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(|_| Error::NotFound(format!("`{}` cannot be opened", spec.path)))?;
    let mut df = match format {
        Format::Csv => {
            let sep = spec.separator.as_bytes();
            if sep.len() != 1 {
                return Err(Error::invalid("`separator`: must be one byte"));
            }
            let parse = CsvParseOptions::default().with_separator(sep[0]);
            CsvReadOptions::default()
                .with_has_header(spec.has_header)
                .with_parse_options(parse)
                .with_n_rows(spec.n_rows)
                .with_columns(spec.columns.as_ref().map(|c| c.iter().map(|s| s.as_str().into()).collect()))
                .into_reader_with_file_handle(file)
                .finish()?
        }
        Format::Parquet => ParquetReader::new(file)
            .with_columns(spec.columns.clone())
            .with_slice(spec.n_rows.map(|n| (0, n)))
            .finish()?,
        Format::Ipc => IpcReader::new(file).with_columns(spec.columns.clone()).with_n_rows(spec.n_rows).finish()?,
    };
    df.rechunk_mut_par();
    Ok(df)
}

/// Writes a frame to a file, returning the bytes written.
pub fn write(format: Format, df: &mut DataFrame, path: &Path) -> Result<u64> {
    let file =
        File::create(path).map_err(|e| Error::PermissionDenied(format!("cannot create the file: {}", e.kind())))?;
    match format {
        Format::Csv => CsvWriter::new(&file).finish(df)?,
        Format::Parquet => {
            ParquetWriter::new(&file).finish(df)?;
        }
        Format::Ipc => IpcWriter::new(&file).finish(df)?,
    }
    Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.csv"), "x\n1\n").unwrap();
        assert!(resolve(Some(&root), "a.csv", true).is_ok());
        assert!(resolve(Some(&root), "./a.csv", true).is_ok());
        assert!(resolve(Some(&root), "new.csv", false).is_ok());
        for bad in ["../a.csv", "/etc/passwd", "x/../../a.csv", ""] {
            let err = resolve(Some(&root), bad, false).unwrap_err();
            assert!(matches!(err, Error::PermissionDenied(_)), "{bad}: {err:?}");
        }
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        let err = resolve(Some(&root), "out/passwd", true).unwrap_err();
        assert!(matches!(err, Error::PermissionDenied(_)));
        assert!(matches!(resolve(None, "a.csv", true), Err(Error::PermissionDenied(_))));
    }
}
