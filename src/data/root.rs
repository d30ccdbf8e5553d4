//! The data root: the one place, local or in an object store, that clients' paths name.
//!
//! A client path is relative: an absolute path, a URL, `..`, or a symlink that leads out of a
//! local root is PERMISSION_DENIED. Answers and info-level logs name the client's path only,
//! never the root's location or its credentials.
//!
//! The root lists what a scan will read ([`Root::list`]): the files' sizes and versions (ETag, or
//! the modification time) make the scan's identity, so a changed dataset gives a new result key;
//! the listing stops one past the file limit, so its cost is bounded.

use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use polars::io::cloud::CloudOptions;
use serde::Serialize;

use crate::error::{Error, Result};

/// An opened data root.
pub struct Root {
    /// `file:///dir/` or `s3://bucket/prefix/`, with a trailing slash: never shown to clients.
    base: String,
    /// The canonical directory of a local root.
    local: Option<PathBuf>,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// Credentials and endpoints, as `(variable, value)` from the environment.
    options: Vec<(String, String)>,
    /// Whether sinks may write under it.
    pub writable: bool,
}

/// One listed file: its path under the root, size and version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FileId {
    /// Relative to the root.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// ETag, or modification time.
    pub version: String,
}

/// A client path, checked and split where its glob starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// The client's path, normalised (no `./`, no trailing slash).
    pub path: String,
    /// The part before the first component with a glob character.
    pub prefix: String,
    /// The glob as a regex over paths relative to the root, if there is one.
    pub pattern: Option<String>,
}

/// What a path names, once listed.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The files, sorted.
    pub files: Vec<FileId>,
    /// Whether the path is a directory (a prefix of several objects) rather than a file or glob.
    pub directory: bool,
}

fn denied(path: &str) -> Error {
    Error::PermissionDenied(format!("`{path}` is outside the data root"))
}

fn has_glob(component: &str) -> bool {
    component.contains(['*', '?', '[', '{'])
}

/// Checks a client path and splits it at its glob.
pub fn locate(path: &str) -> Result<Located> {
    if path.is_empty() || path.starts_with('/') || path.starts_with('\\') || path.contains("://") || path.contains('\0')
    {
        return Err(denied(path));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(denied(path)),
            p if p.contains('\\') || p.contains(':') && parts.is_empty() => return Err(denied(path)),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(Error::invalid(format!("`path`: `{path}` names no file")));
    }
    let first_glob = parts.iter().position(|p| has_glob(p)).unwrap_or(parts.len());
    let pattern = (first_glob < parts.len()).then(|| glob_regex(&parts.join("/")));
    Ok(Located { path: parts.join("/"), prefix: parts[..first_glob].join("/"), pattern })
}

/// A glob as an anchored regex: `**` any depth, `*` and `?` within one component, `[..]` a class,
/// `{a,b}` alternatives.
fn glob_regex(glob: &str) -> String {
    let mut out = String::from("^");
    let mut chars = glob.chars().peekable();
    let mut in_braces = false;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    out.push_str("(?:.*/)?");
                } else {
                    out.push_str(".*");
                }
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' => {
                out.push('[');
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    if c == '\\' || c == '^' && out.ends_with('[') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push(']');
            }
            '{' => {
                in_braces = true;
                out.push_str("(?:");
            }
            '}' if in_braces => {
                in_braces = false;
                out.push(')');
            }
            ',' if in_braces => out.push('|'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}

/// Whether a file under a scanned directory is skipped as Polars skips it (hidden, or written by
/// a sink that has not published).
fn hidden(relative: &str) -> bool {
    relative.rsplit('/').next().is_some_and(|name| super::scan::HIDDEN_PREFIXES.iter().any(|p| name.starts_with(p)))
}

impl Root {
    /// Opens the root at `url` (`file:///dir`, `s3://bucket/prefix`, `az://...`, `gs://...`) with
    /// `options` its credentials.
    pub fn open(url: &str, options: Vec<(String, String)>, writable: bool) -> Result<Root> {
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid(format!("POLARWAY_DATA_URL: not a URL: {e}")))?;
        if parsed.scheme() == "file" {
            let dir = parsed.to_file_path().map_err(|_| Error::invalid("POLARWAY_DATA_URL: not a local path"))?;
            return Root::open_dir(&dir, writable);
        }
        let (store, prefix) = object_store::parse_url_opts(&parsed, options.iter().cloned())
            .map_err(|e| Error::invalid(format!("POLARWAY_DATA_URL: {e}")))?;
        let base = format!("{}/", url.trim_end_matches('/'));
        Ok(Root { base, local: None, store: Arc::from(store), prefix, options, writable })
    }

    /// Opens a local directory as the root.
    pub fn open_dir(dir: &std::path::Path, writable: bool) -> Result<Root> {
        let dir = dir.canonicalize().map_err(|e| {
            Error::invalid(format!("the data root {} is not an existing directory: {e}", dir.display()))
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| Error::invalid(format!("the data root: {e}")))?;
        let base = format!("{}/", dir.display().to_string().trim_end_matches('/'));
        Ok(Root {
            base,
            local: Some(dir),
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            options: vec![],
            writable,
        })
    }

    /// The location Polars reads `path` (relative, checked) from.
    pub fn polars_location(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Polars' options for the root's object store (none for a local root).
    pub fn cloud_options(&self) -> Result<Option<CloudOptions>> {
        if self.local.is_some() {
            return Ok(None);
        }
        let scheme = polars::polars_utils::pl_path::CloudScheme::from_path(&self.base);
        let config = self.options.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone()));
        Ok(Some(CloudOptions::from_untyped_config(scheme, config)?))
    }

    /// The root's object store and the object path of `relative`.
    pub fn object(&self, relative: &str) -> (Arc<dyn ObjectStore>, ObjectPath) {
        let mut path = self.prefix.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        (self.store.clone(), path)
    }

    /// The root's object store, for DataFusion to read datasets with.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The URL DataFusion names the root by (`file:///dir/` or `s3://bucket/prefix/`).
    pub fn url(&self) -> String {
        match &self.local {
            Some(_) => format!("file://{}", self.base),
            None => self.base.clone(),
        }
    }

    /// The local file or directory of `relative`, on a local root.
    pub fn local_path(&self, relative: &str) -> Option<PathBuf> {
        self.local.as_ref().map(|dir| dir.join(relative))
    }

    /// Whether the root is a local directory.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// Lists the files `located` names, at most `max_files` (one more is an error).
    pub async fn list(&self, located: &Located, max_files: usize) -> Result<Listing> {
        let pattern = match &located.pattern {
            Some(p) => Some(regex::Regex::new(p).map_err(|e| Error::invalid(format!("`path`: not a glob: {e}")))?),
            None => None,
        };
        let (_, prefix) = self.object(&located.prefix);
        let strip = |location: &ObjectPath| -> String {
            let full = location.as_ref();
            let root = self.prefix.as_ref();
            full.strip_prefix(root).unwrap_or(full).trim_start_matches('/').to_string()
        };
        let mut files = Vec::new();
        let mut directory = false;
        if pattern.is_none() {
            // A file, or else a directory.
            match self.store.head(&prefix).await {
                Ok(meta) => files.push(file_id(strip(&meta.location), &meta)),
                Err(object_store::Error::NotFound { .. }) => directory = true,
                Err(e) => return Err(store_error(&located.path, e)),
            }
        }
        if files.is_empty() {
            let mut listing = self.store.list(Some(&prefix));
            while let Some(meta) = listing.try_next().await.map_err(|e| store_error(&located.path, e))? {
                let relative = strip(&meta.location);
                let under = relative.strip_prefix(&located.prefix).unwrap_or(&relative).trim_start_matches('/');
                if hidden(under) || pattern.as_ref().is_some_and(|p| !p.is_match(&relative)) {
                    continue;
                }
                if files.len() == max_files {
                    return Err(crate::limits::Limit::ScanFiles
                        .exceeded(format!("`{}` names more than {max_files} files", located.path)));
                }
                files.push(file_id(relative, &meta));
            }
        }
        if files.is_empty() {
            return Err(Error::NotFound(format!("`{}` names no files", located.path)));
        }
        if let Some(dir) = &self.local {
            // A symlink inside the root may lead out of it.
            for file in &files {
                let real = dir.join(&file.path).canonicalize().map_err(|_| denied(&located.path))?;
                if !real.starts_with(dir) {
                    return Err(denied(&located.path));
                }
            }
        }
        files.sort();
        Ok(Listing { files, directory })
    }
}

fn file_id(path: String, meta: &object_store::ObjectMeta) -> FileId {
    let version =
        meta.e_tag.clone().unwrap_or_else(|| meta.last_modified.timestamp_nanos_opt().unwrap_or(0).to_string());
    FileId { path, size: meta.size, version }
}

/// An object-store failure while listing `path`, naming the client's path only.
fn store_error(path: &str, e: object_store::Error) -> Error {
    tracing::debug!(path, error = %e, "data root listing failed");
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound(format!("`{path}` does not exist")),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            Error::PermissionDenied(format!("`{path}`: the data root refused the listing"))
        }
        other => Error::store(format!("the data root: cannot list `{path}`"), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        for bad in ["/etc/passwd", "../x", "a/../../x", "s3://other/x", "", "c:/x", "a\\..\\b"] {
            assert!(locate(bad).is_err(), "{bad}");
        }
        let l = locate("./sales//year=2024/*.parquet").unwrap();
        assert_eq!(l.path, "sales/year=2024/*.parquet");
        assert_eq!(l.prefix, "sales/year=2024");
        let re = regex::Regex::new(l.pattern.as_deref().unwrap()).unwrap();
        assert!(re.is_match("sales/year=2024/a.parquet"));
        assert!(!re.is_match("sales/year=2024/x/a.parquet"));
        let deep = regex::Regex::new(&locate("s/**/*.parquet").unwrap().pattern.unwrap()).unwrap();
        assert!(deep.is_match("s/a.parquet") && deep.is_match("s/k=1/j=2/a.parquet"));
        assert!(!deep.is_match("s/a.csv"));
        let alt = regex::Regex::new(&locate("t/{a,b}.csv").unwrap().pattern.unwrap()).unwrap();
        assert!(alt.is_match("t/a.csv") && alt.is_match("t/b.csv") && !alt.is_match("t/c.csv"));
        assert_eq!(locate("x.parquet").unwrap().pattern, None);
    }

    #[tokio::test]
    async fn listing_names_files_and_refuses_symlinks_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("s/k=1")).unwrap();
        std::fs::write(dir.path().join("s/k=1/a.parquet"), b"1").unwrap();
        std::fs::write(dir.path().join("s/k=1/.hidden"), b"1").unwrap();
        std::fs::write(dir.path().join("s/b.parquet"), b"22").unwrap();
        let root = Root::open_dir(dir.path(), false).unwrap();
        let listing = root.list(&locate("s").unwrap(), 10).await.unwrap();
        assert!(listing.directory);
        let names: Vec<_> = listing.files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        assert_eq!(names, [("s/b.parquet", 2), ("s/k=1/a.parquet", 1)]);
        let one = root.list(&locate("s/b.parquet").unwrap(), 10).await.unwrap();
        assert!(!one.directory && one.files.len() == 1);
        let err = root.list(&locate("s").unwrap(), 1).await.unwrap_err();
        assert!(err.to_string().contains("POLARWAY_MAX_SCAN_FILES"), "{err}");
        assert!(matches!(root.list(&locate("nothing").unwrap(), 10).await, Err(Error::NotFound(_))));
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.parquet"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("s/out")).unwrap();
        let err = root.list(&locate("s/**/*.parquet").unwrap(), 10).await.unwrap_err();
        assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
        assert!(!err.to_string().contains(&dir.path().display().to_string()), "the root is not named: {err}");
    }
}
