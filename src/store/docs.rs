//! Small documents beside the results: dataset names, job records, the job queue and leases.
//!
//! Callers name a document by what it is ([`DocKey`]) and a family of them by what they share
//! ([`DocSet`]); only the store turns these into paths. The layout, relative to the store's root:
//!
//! ```text
//! names/<tenant>/<name>.json   a dataset name's binding (`-` is the tenant of calls without auth)
//! jobs/<id>.json               a job's record
//! queue/<id>                   present while the job is pending or running
//! leases/<id>.<generation>     who runs the job
//! ```

use crate::handle::Handle;

/// The namespace of calls without authentication (tenant names start with a letter or digit).
const ANONYMOUS: &str = "-";

/// One document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocKey {
    /// The binding of `tenant`'s dataset `name`.
    Name {
        /// The tenant, or `None` without authentication.
        tenant: Option<String>,
        /// The dataset name.
        name: String,
    },
    /// A job's record.
    Job(Handle),
    /// A job's place in the queue.
    Queued(Handle),
    /// One lease generation of a job.
    Lease(Handle, u64),
}

/// A family of documents, listed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocSet {
    /// Every name `tenant` has bound.
    Names(Option<String>),
    /// Every queued job.
    Queue,
    /// Every lease generation of one job.
    Leases(Handle),
}

impl DocKey {
    /// The document's path relative to the store's root.
    pub fn path(&self) -> String {
        match self {
            DocKey::Name { tenant, name } => format!("names/{}/{name}.json", tenant.as_deref().unwrap_or(ANONYMOUS)),
            DocKey::Job(id) => format!("jobs/{id}.json"),
            DocKey::Queued(id) => format!("queue/{id}"),
            DocKey::Lease(id, generation) => format!("leases/{id}.{generation}"),
        }
    }
}

impl DocSet {
    /// The directory the family's documents are in, relative to the store's root.
    pub fn dir(&self) -> String {
        match self {
            DocSet::Names(tenant) => format!("names/{}", tenant.as_deref().unwrap_or(ANONYMOUS)),
            DocSet::Queue => "queue".to_string(),
            DocSet::Leases(_) => "leases".to_string(),
        }
    }

    /// The key of the document named `file` in [`DocSet::dir`], if it belongs to the family.
    pub fn key(&self, file: &str) -> Option<DocKey> {
        match self {
            DocSet::Names(tenant) => {
                let name = file.strip_suffix(".json")?;
                Some(DocKey::Name { tenant: tenant.clone(), name: name.to_string() })
            }
            DocSet::Queue => Handle::parse(file).ok().map(DocKey::Queued),
            DocSet::Leases(id) => {
                let generation = file.strip_prefix(id.as_str())?.strip_prefix('.')?.parse().ok()?;
                Some(DocKey::Lease(id.clone(), generation))
            }
        }
    }

    /// The keys among `files` (names in [`DocSet::dir`]) that belong to the family.
    pub fn keys<'a>(&self, files: impl IntoIterator<Item = &'a str>) -> Vec<DocKey> {
        files.into_iter().filter_map(|file| self.key(file)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_sets_agree_on_paths() {
        let id = Handle::random();
        let keys = [
            (DocKey::Name { tenant: None, name: "t".into() }, DocSet::Names(None)),
            (DocKey::Name { tenant: Some("acme".into()), name: "t".into() }, DocSet::Names(Some("acme".into()))),
            (DocKey::Queued(id.clone()), DocSet::Queue),
            (DocKey::Lease(id.clone(), 7), DocSet::Leases(id.clone())),
        ];
        for (key, set) in keys {
            let path = key.path();
            let (dir, file) = path.rsplit_once('/').unwrap();
            assert_eq!(dir, set.dir(), "{key:?}");
            assert_eq!(set.key(file), Some(key.clone()), "{key:?}");
        }
        assert_eq!(DocKey::Job(id.clone()).path(), format!("jobs/{id}.json"));
        // Another job's lease, and stray files, are not in the family.
        let other = Handle::random();
        assert_eq!(DocSet::Leases(id.clone()).key(&format!("{other}.0")), None);
        assert_eq!(DocSet::Leases(id).key("x.y"), None);
        assert_eq!(DocSet::Queue.key("not-a-handle"), None);
    }
}
