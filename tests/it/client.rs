//! The Rust client: a chain continues when the worker it was routed to stops mid-chain, and
//! errors that are not transient are not retried.

use polars::prelude::*;
use polarway::client::{Client, ClientConfig, RetryPolicy};
use serde_json::json;
use tonic::Code;

use crate::fixture::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_moves_to_a_live_worker_when_its_worker_stops() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_path_buf();
    let shared = |cfg: &mut polarway::config::Config| {
        cfg.store = polarway::config::StoreConfig::Directory(dir.clone());
    };
    let a = TestServer::start_with(Mode::External, shared).await;
    let b = TestServer::start_with(Mode::External, shared).await;
    let endpoints = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let client = Client::new(&[&endpoints[0], &endpoints[1]], ClientConfig::default()).unwrap();

    let df = df!("sym" => ["a", "b", "a"], "qty" => [1i64, 2, 3]).unwrap();
    let (schema, batches) = polarway::convert::frame_to_batches(&df).unwrap();
    let up = client.upload("t", schema, batches, None).await.unwrap();
    let f =
        client.run("filter", &json!({"input": up.handle, "predicate": "qty > 1"}), Some(&up.affinity)).await.unwrap();
    // Stop the worker this chain prefers; the next calls go to the other.
    let preferred = client.order(Some(&f.affinity))[0];
    let (stopped, alive) = if preferred == 0 { (a, b) } else { (b, a) };
    stopped.stop().await;
    let g = client
        .run("sort", &json!({"input": f.handle, "by": ["qty"], "descending": true}), Some(&f.affinity))
        .await
        .unwrap();
    let batches = client.fetch(&g.handle, Some(&g.affinity)).await.unwrap();
    let got = polarway::convert::batches_to_frame(&batches[0].schema(), &batches).unwrap();
    assert_same(&got, &df!("sym" => ["a", "b"], "qty" => [3i64, 2]).unwrap(), "after failover");
    alive.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_are_not_retried() {
    let server = TestServer::start(Mode::Memory).await;
    let endpoint = format!("http://{}", server.addr);
    let config = ClientConfig {
        retry: RetryPolicy { attempts: 50, initial: std::time::Duration::from_secs(1), ..Default::default() },
        ..Default::default()
    };
    let client = Client::new(&[&endpoint], config).unwrap();
    let started = std::time::Instant::now();
    let err = client.action("filter", &json!({"input": "nope"}), None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "answered at once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polars_expressions_chain_into_one_pipeline() {
    let server = TestServer::start(Mode::Memory).await;
    let endpoint = format!("http://{}", server.addr);
    let client = Client::new(&[&endpoint], ClientConfig::default()).unwrap();
    let df =
        df!("sym" => [Some("a"), Some("b"), None, Some("a")], "qty" => [Some(5i64), Some(20), Some(30), None]).unwrap();
    let (schema, batches) = polarway::convert::frame_to_batches(&df).unwrap();
    let up = client.upload("t", schema, batches, None).await.unwrap();
    let chain = || {
        client
            .frame(&up)
            .filter(col("qty").gt(lit(1)))
            .with_columns([(col("qty") * lit(2)).alias("q2")])
            .group_by_stable([col("sym")])
            .agg([col("q2").sum().alias("total"), col("qty").max().alias("hi")])
    };
    let got = chain().collect().await.unwrap();
    let want = df
        .lazy()
        .filter(col("qty").gt(lit(1)))
        .with_columns([(col("qty") * lit(2)).alias("q2")])
        .group_by_stable([col("sym")])
        .agg([col("q2").sum().alias("total"), col("qty").max().alias("hi")])
        .collect()
        .unwrap();
    assert_same(&got, &want, "native chain");
    // The same chain names the same stored result.
    assert_eq!(chain().persist().await.unwrap().handle, chain().persist().await.unwrap().handle);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_datasets_joins_of_plans_and_sinks_from_the_rust_client() {
    let lake = tempfile::tempdir().unwrap();
    let root = lake.path().canonicalize().unwrap();
    let orders = df!("o_orderkey" => [1i64, 2, 3, 4], "status" => ["F", "O", "F", "P"]).unwrap();
    let lines = df!("l_orderkey" => [1i64, 1, 3, 4], "qty" => [50i64, 2, 47, 1]).unwrap();
    std::fs::create_dir_all(root.join("t")).unwrap();
    ParquetWriter::new(std::fs::File::create(root.join("t/orders.parquet")).unwrap())
        .finish(&mut orders.clone())
        .unwrap();
    ParquetWriter::new(std::fs::File::create(root.join("t/lines.parquet")).unwrap())
        .finish(&mut lines.clone())
        .unwrap();
    let datasets = br#"{"orders": {"path": "t/orders.parquet", "format": "parquet"}}"#;
    let server = TestServer::start_with(Mode::Memory, |cfg| {
        cfg.data = polarway::config::DataConfig {
            root: Some(polarway::config::DataRoot::Directory(root.clone())),
            writable: true,
            datasets: polarway::data::datasets::Datasets::parse(datasets).unwrap(),
        };
    })
    .await;
    let client = Client::new(&[&format!("http://{}", server.addr)], ClientConfig::default()).unwrap();
    let big = client.scan_parquet("t/lines.parquet", false).filter(col("qty").gt(lit(45)));
    let got = client
        .dataset("orders")
        .join(&big, [col("o_orderkey")], [col("l_orderkey")], "semi")
        .sort([col("o_orderkey")], false)
        .collect()
        .await
        .unwrap();
    assert_eq!(got.column("o_orderkey").unwrap().i64().unwrap().to_vec(), [Some(1), Some(3)]);
    assert!(
        client
            .scan_parquet("t/lines.parquet", false)
            .filter(col("qty").gt(lit(45)))
            .explain()
            .await
            .unwrap()
            .contains("qty")
    );
    let written = client
        .dataset("orders")
        .sink(json!({"format": "parquet", "path": "out/orders", "partition_by": ["status"]}))
        .await
        .unwrap();
    assert_eq!(written["num_rows"], 4);
    assert_eq!(written["files"].as_array().unwrap().len(), 3, "{written}");
    let back = client.scan_parquet("out/orders", true).sort([col("o_orderkey")], false).collect().await.unwrap();
    assert_eq!(back.height(), 4);
    let err = client.scan_parquet("../escape.parquet", false).collect().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    server.stop().await;
}
