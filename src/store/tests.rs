use chrono::{Duration, Utc};
use polars::prelude::*;

use super::*;

fn meta_for(frame: &DataFrame) -> ResultMeta {
    let now = Utc::now();
    ResultMeta {
        handle: Handle::random(),
        name: Some("t".into()),
        schema: describe_schema(frame),
        num_rows: frame.height() as u64,
        num_bytes: 0,
        created_at: now,
        expires_at: now + Duration::hours(1),
        pinned: false,
        lineage: Lineage { op: "upload".into(), params: serde_json::json!({}), inputs: vec![] },
        affinity: String::new(),
        tenant: None,
        checksums: None,
    }
}

fn exercise(store: &dyn StateStore) {
    let frame = df!("a" => [1i64, 2, 3], "b" => ["x", "y", "z"]).unwrap();
    let meta = store.put(&frame, meta_for(&frame)).unwrap();
    assert!(meta.num_bytes > 0);
    assert_eq!(store.meta(&meta.handle).unwrap().unwrap(), meta);
    assert!(store.load(&meta.handle).unwrap().equals_missing(&frame));
    let stream = store.open_batches(&meta.handle).unwrap();
    let rows: usize = stream.batches.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 3);

    let mut pinned = meta.clone();
    pinned.pinned = true;
    store.write_meta(&pinned).unwrap();
    assert!(store.meta(&meta.handle).unwrap().unwrap().pinned);
    assert_eq!(store.list().unwrap().len(), 1);

    assert!(store.delete(&meta.handle).unwrap());
    assert!(!store.delete(&meta.handle).unwrap(), "a second delete is not an error");
    assert!(store.meta(&meta.handle).unwrap().is_none());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn memory_store_contract() {
    exercise(&MemoryStore::new());
}

#[test]
fn directory_store_contract() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStateStore::open_dir(dir.path(), runtime.handle().clone()).unwrap();
    exercise(&store);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("results")).unwrap().collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}

#[test]
fn large_results_go_up_in_parts_and_come_back_by_range() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStateStore::open_dir(dir.path(), runtime.handle().clone()).unwrap();
    let n = 3_000_000i64;
    let frame = df!("a" => (0..n).collect::<Vec<_>>(), "b" => (0..n).map(|i| i as f64).collect::<Vec<_>>()).unwrap();
    let meta = store.put(&frame, meta_for(&frame)).unwrap();
    assert!(meta.num_bytes > 2 * (8 << 20), "bigger than one part: {}", meta.num_bytes);
    let stream = store.open_batches(&meta.handle).unwrap();
    let mut batches = 0;
    let mut rows = 0;
    for batch in stream.batches {
        batches += 1;
        rows += batch.unwrap().num_rows();
    }
    assert_eq!(rows as i64, n);
    assert!(batches > 10, "read batch by batch: {batches}");
    assert!(store.load(&meta.handle).unwrap().equals_missing(&frame));
}

#[test]
fn orphans_are_removed_after_the_grace_period() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStateStore::open_dir(dir.path(), runtime.handle().clone()).unwrap();
    let frame = df!("a" => [1i64]).unwrap();
    let kept = store.put(&frame, meta_for(&frame)).unwrap();
    let results = dir.path().join("results");
    std::fs::write(results.join("pw1_00000000000000000000000000000000.arrow"), b"data without meta").unwrap();
    std::fs::write(results.join("pw1_00000000000000000000000000000001.arrow#7"), b"staged").unwrap();
    assert_eq!(store.remove_orphans(Utc::now() - Duration::hours(1)).unwrap(), 0, "young orphans stay");
    assert_eq!(store.remove_orphans(Utc::now() + Duration::seconds(1)).unwrap(), 2);
    assert!(store.load(&kept.handle).unwrap().equals_missing(&frame), "complete results stay");
}

fn exercise_documents(store: &dyn StateStore) {
    let id = Handle::random();
    let name = |n: &str| DocKey::Name { tenant: Some("acme".into()), name: n.into() };
    assert!(store.put_doc(&name("t"), b"1".to_vec(), true).unwrap());
    assert!(!store.put_doc(&name("t"), b"2".to_vec(), true).unwrap(), "create-only refuses an existing document");
    assert_eq!(store.get_doc(&name("t")).unwrap().as_deref(), Some(&b"1"[..]));
    assert!(store.put_doc(&name("t"), b"2".to_vec(), false).unwrap());
    assert_eq!(store.get_doc(&name("t")).unwrap().as_deref(), Some(&b"2"[..]));
    store.put_doc(&name("u"), Vec::new(), false).unwrap();
    // Another tenant's names, the queue and another job's leases are other sets.
    store.put_doc(&DocKey::Name { tenant: None, name: "t".into() }, Vec::new(), false).unwrap();
    store.put_doc(&DocKey::Queued(id.clone()), Vec::new(), false).unwrap();
    store.put_doc(&DocKey::Lease(id.clone(), 0), Vec::new(), true).unwrap();
    store.put_doc(&DocKey::Lease(id.clone(), 1), Vec::new(), true).unwrap();
    store.put_doc(&DocKey::Lease(Handle::random(), 0), Vec::new(), true).unwrap();
    let mut names = store.list_docs(&DocSet::Names(Some("acme".into()))).unwrap();
    names.sort_by_key(DocKey::path);
    assert_eq!(names, [name("t"), name("u")]);
    assert_eq!(store.list_docs(&DocSet::Queue).unwrap(), [DocKey::Queued(id.clone())]);
    let mut leases = store.list_docs(&DocSet::Leases(id.clone())).unwrap();
    leases.sort_by_key(DocKey::path);
    assert_eq!(leases, [DocKey::Lease(id.clone(), 0), DocKey::Lease(id.clone(), 1)]);
    store.delete_doc(&name("t")).unwrap();
    store.delete_doc(&name("t")).unwrap();
    assert_eq!(store.get_doc(&name("t")).unwrap(), None, "deleted, and a second delete is not an error");
}

#[test]
fn memory_store_documents() {
    exercise_documents(&MemoryStore::new());
}

#[test]
fn directory_store_documents() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    exercise_documents(&ObjectStateStore::open_dir(dir.path(), runtime.handle().clone()).unwrap());
}
