//! Hot paths: DoGet throughput of a stored result, and one operation end to end.
//!
//! Run: `cargo bench --profile dev --bench flight` (the profile the tests use; see README).

use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::{StreamExt, TryStreamExt};
use polars::prelude::*;
use polarway::config::{Config, StoreConfig};
use polarway::convert;
use polarway::engine::Engine;

struct Bench {
    channel: tonic::transport::Channel,
    handle: String,
    bytes: u64,
    _state: tempfile::TempDir,
}

fn frame(rows: i64) -> DataFrame {
    df!(
        "id" => (0..rows).collect::<Vec<_>>(),
        "sym" => (0..rows).map(|i| ["AAPL", "MSFT", "GOOG", "AMZN"][(i % 4) as usize]).collect::<Vec<_>>(),
        "qty" => (0..rows).map(|i| (i * 7) % 1000).collect::<Vec<_>>(),
        "price" => (0..rows).map(|i| (i % 500) as f64 * 0.25).collect::<Vec<_>>(),
    )
    .unwrap()
}

async fn start(store: &str, rows: i64) -> Bench {
    let state = tempfile::tempdir().unwrap();
    let store = match store {
        "memory" => StoreConfig::Memory,
        _ => StoreConfig::Directory(state.path().to_path_buf()),
    };
    let config = Config::with_store(store);
    let engine = Arc::new(Engine::try_new(&config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(polarway::server::serve_engine(engine, config, listener, std::future::pending()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = FlightClient::new(channel.clone());
    let (schema, batches) = convert::frame_to_batches(&frame(rows)).unwrap();
    let put = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["bench".into()])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let results: Vec<_> = client.do_put(put).await.unwrap().try_collect().await.unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&results[0].app_metadata).unwrap();
    Bench {
        channel,
        handle: meta["handle"].as_str().unwrap().to_string(),
        bytes: meta["num_bytes"].as_u64().unwrap(),
        _state: state,
    }
}

fn do_get(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("do_get");
    group.sample_size(10);
    let rows = 1_000_000;
    for store in ["memory", "external"] {
        let bench = rt.block_on(start(store, rows));
        group.throughput(Throughput::Bytes(bench.bytes));
        group.bench_with_input(BenchmarkId::new(store, format!("{rows}x4")), &bench, |b, bench| {
            b.to_async(&rt).iter(|| async {
                let mut client = FlightClient::new(bench.channel.clone());
                let mut stream = client.do_get(Ticket::new(bench.handle.clone())).await.unwrap();
                let mut n = 0;
                while let Some(batch) = stream.next().await {
                    n += batch.unwrap().num_rows();
                }
                assert_eq!(n as i64, rows);
            })
        });
    }
    group.finish();
}

fn group_by(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("group_by");
    group.sample_size(10);
    let rows = 1_000_000;
    let bench = rt.block_on(start("memory", rows));
    let mut salt = 0u64;
    group.bench_function(BenchmarkId::new("memory", format!("{rows}x4")), |b| {
        b.to_async(&rt).iter(|| {
            // A fresh alias each time: the same request would be answered from the stored result.
            salt += 1;
            let body = serde_json::json!({
                "input": bench.handle,
                "by": ["sym"],
                "aggs": [format!("sum(qty) AS total_{salt}"), "avg(price) AS px"],
            });
            let mut client = FlightClient::new(bench.channel.clone());
            async move {
                let action = Action::new("group_by", body.to_string());
                let out: Vec<_> = client.do_action(action).await.unwrap().try_collect().await.unwrap();
                assert_eq!(out.len(), 1);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, do_get, group_by);
criterion_main!(benches);
