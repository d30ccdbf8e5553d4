//! Shared-store behaviour: the decoded-result cache, affinity keys, lineage recovery, and the
//! `gc --once` command.

use std::process::Command;
use std::time::Duration;

use polars::prelude::*;
use serde_json::json;
use tonic::Code;

use crate::fixture::*;

fn frame() -> DataFrame {
    df!("sym" => ["a", "b", "a", "c"], "qty" => [1i64, 2, 3, 4]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_served_from_the_cache_and_chains_share_an_affinity_key() {
    let server = TestServer::start(Mode::External).await;
    let mut c = server.client().await;
    let up = c.upload("t", &frame()).await;
    let h = handle_of(&up);
    assert_eq!(up["affinity"], h.as_str(), "a chain starts with its upload's handle");
    let f = c.action("filter", json!({"input": h, "predicate": "qty > 1"})).await.unwrap();
    let g = c.action("head", json!({"input": handle_of(&f), "n": 1})).await.unwrap();
    assert_eq!(f["affinity"], up["affinity"]);
    assert_eq!(g["affinity"], up["affinity"]);
    let cache = server.engine.cache().expect("external stores have a cache");
    let misses = cache.misses();
    let hits = cache.hits();
    c.action("filter", json!({"input": h, "predicate": "qty > 2"})).await.unwrap();
    assert_eq!(cache.hits(), hits + 1, "the input came from the cache");
    assert_eq!(cache.misses(), misses);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_results_are_recomputed_from_their_lineage() {
    let server = TestServer::start(Mode::External).await;
    let mut c = server.client().await;
    let h = handle_of(&c.upload("t", &frame()).await);
    let f = handle_of(&c.action("filter", json!({"input": h, "predicate": "qty > 1"})).await.unwrap());
    let g = handle_of(
        &c.action("group_by", json!({"input": f, "by": ["sym"], "aggs": ["sum(qty) AS total"]})).await.unwrap(),
    );
    let want = c.get(&g).await.unwrap();
    // Lose both derived artifacts by hand (and the cache with a new worker on the same store).
    let results = server.state_dir.path().join("results");
    std::fs::remove_file(results.join(format!("{f}.arrow"))).unwrap();
    std::fs::remove_file(results.join(format!("{g}.arrow"))).unwrap();
    let config_dir = server.state_dir.path().to_path_buf();
    let other = TestServer::start_with(Mode::External, |cfg| {
        cfg.store = polarway::config::StoreConfig::Directory(config_dir);
    })
    .await;
    let mut c2 = other.client().await;
    assert_same_rows(&c2.get(&g).await.unwrap(), &want, "recomputed through two levels");
    assert_eq!(other.engine.recoveries(), 2, "g and then its lost input f");
    assert!(results.join(format!("{g}.arrow")).exists(), "the artifact is back");
    // An upload has no lineage to recompute from.
    std::fs::remove_file(results.join(format!("{h}.arrow"))).unwrap();
    let err = c2.get(&h).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("cannot be recomputed"), "{err}");
    other.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_once_deletes_expired_results_and_orphans_but_not_pinned_ones() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_path_buf();
    // The worker's clock runs an hour behind: its results expired long ago for `gc --once`,
    // which reads the wall clock, without waiting for them to.
    let clock = polarway::clock::ManualClock::shared_behind(Duration::from_secs(3600));
    let server = TestServer::start_with(Mode::External, move |cfg| {
        cfg.store = polarway::config::StoreConfig::Directory(dir);
        cfg.result_ttl = Duration::from_millis(200);
        cfg.clock = clock;
    })
    .await;
    let mut c = server.client().await;
    let kept = handle_of(&c.upload("kept", &frame()).await);
    let gone = handle_of(&c.upload("gone", &frame()).await);
    c.action("pin", json!({"handle": kept})).await.unwrap();
    server.stop().await;
    let results = state.path().join("results");
    std::fs::write(results.join("pw1_00000000000000000000000000000000.arrow#3"), b"staged").unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_polarway-grpc"))
        .args(["gc", "--once"])
        .env_clear()
        .env("POLARWAY_HANDLE_STORE", "external")
        .env("POLARWAY_STATE_DIR", state.path())
        .env("POLARWAY_ORPHAN_GRACE_SECS", "0")
        .env("POLARWAY_GC_INTERVAL_SECS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("deleted 1 expired results and 1 orphans"), "{stdout}");
    assert!(results.join(format!("{kept}.arrow")).exists(), "pinned results stay");
    assert!(!results.join(format!("{gone}.arrow")).exists());
    assert!(!results.join(format!("{gone}.json")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_flight_completes_across_a_sweep_that_deletes_its_result() {
    let clock = polarway::clock::ManualClock::shared();
    let shared = clock.clone();
    let server = TestServer::start_with(Mode::External, move |c| {
        c.result_ttl = Duration::from_secs(60);
        c.gc_interval = Duration::from_secs(3600);
        c.clock = shared.clone();
    })
    .await;
    let mut c = server.client().await;
    let n = 500_000i64;
    let big =
        df!("i" => (0..n).collect::<Vec<_>>(), "s" => (0..n).map(|i| format!("row {i}")).collect::<Vec<_>>()).unwrap();
    let h = handle_of(&c.upload("big", &big).await);
    let mut stream = c.inner.do_get(arrow_flight::Ticket::new(h.clone())).await.unwrap();
    use futures::StreamExt;
    let mut rows = stream.next().await.unwrap().unwrap().num_rows();
    clock.advance(Duration::from_secs(61));
    // Sweep with no read grace: the result's files are deleted under the open stream.
    let store = server.engine.store();
    let handle = polarway::handle::Handle::parse(&h).unwrap();
    assert!(tokio::task::block_in_place(|| store.delete(&handle).unwrap()));
    while let Some(batch) = stream.next().await {
        rows += batch.unwrap().num_rows();
    }
    assert_eq!(rows as i64, n, "the stream completed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_stays_bounded_under_a_steady_stream_of_results() {
    // A steady stream of results over 40 s of the worker's time, 200 ms of it per step: a
    // 10 s TTL, a sweep every second of that time (the timer's own sweeps run too, and find
    // nothing more), so a result lives TTL + read grace + one interval at most.
    let (ttl, interval, step) = (Duration::from_secs(10), Duration::from_secs(1), Duration::from_millis(200));
    let clock = polarway::clock::ManualClock::shared();
    let shared = clock.clone();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_path_buf();
    let server = TestServer::start_with(Mode::External, move |c| {
        c.store = polarway::config::StoreConfig::Directory(dir);
        c.result_ttl = ttl;
        c.gc_interval = interval;
        c.clock = shared.clone();
    })
    .await;
    let mut c = server.client().await;
    let results = state.path().join("results");
    // Each result is two files: its IPC file and its metadata.
    let count = || std::fs::read_dir(&results).unwrap().count() / 2;
    let steps_per_sweep = (interval.as_millis() / step.as_millis()) as i64;
    let mut samples = Vec::new();
    for i in 0..200i64 {
        let h = handle_of(&c.upload("t", &df!("x" => [i]).unwrap()).await);
        c.action("head", json!({"input": h, "n": 1})).await.unwrap();
        clock.advance(step);
        if (i + 1) % steps_per_sweep == 0 {
            server.engine.sweep().await.unwrap();
            samples.push(count());
        }
    }
    // Two results per step, each kept for at most TTL + 2 intervals.
    let lifetime = ((ttl + 2 * interval).as_millis() / step.as_millis()) as usize;
    let bound = 2 * lifetime;
    assert!(samples.iter().all(|&n| n <= bound), "bounded by {bound}: {samples:?}");
    // Not growing: once the first results expire, the count stays where it is.
    let steady = &samples[lifetime / steps_per_sweep as usize..];
    let (low, high) = (steady.iter().min().unwrap(), steady.iter().max().unwrap());
    assert!(high - low <= 2 * steps_per_sweep as usize, "flat: {steady:?}");
    // Once creation stops, everything is gone after TTL and one more interval of read grace.
    clock.advance(ttl + 2 * interval);
    server.engine.sweep().await.unwrap();
    assert_eq!(count(), 0, "all expired results deleted");
    server.stop().await;
}
