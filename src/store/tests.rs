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
    let dir = tempfile::tempdir().unwrap();
    let store = DirectoryStore::open(dir.path()).unwrap();
    exercise(&store);
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temporaries left");
}
