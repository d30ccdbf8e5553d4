//! Hot paths inside a worker, without the network: Polars <-> arrow-rs conversion, Flight IPC
//! encode and decode, state store put and get, and a few operations.
//!
//! Run: `cargo bench --profile dev --bench hot_paths`.

use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::TryStreamExt;
use polars::prelude::*;
use polarway::config::{Config, StoreConfig};
use polarway::convert;
use polarway::handle::Handle;
use polarway::ops::{self, Step};
use polarway::store::{Lineage, ObjectStateStore, ResultMeta, ResultStore, describe_schema};

const ROWS: i64 = 1_000_000;

fn frame(rows: i64) -> DataFrame {
    df!(
        "id" => (0..rows).collect::<Vec<_>>(),
        "sym" => (0..rows).map(|i| ["AAPL", "MSFT", "GOOG", "AMZN"][(i % 4) as usize]).collect::<Vec<_>>(),
        "qty" => (0..rows).map(|i| (i * 7) % 1000).collect::<Vec<_>>(),
        "price" => (0..rows).map(|i| (i % 500) as f64 * 0.25).collect::<Vec<_>>(),
    )
    .unwrap()
}

fn conversion(c: &mut Criterion) {
    let df = frame(ROWS);
    let (schema, batches) = convert::frame_to_batches(&df).unwrap();
    let mut group = c.benchmark_group("convert");
    group.throughput(Throughput::Bytes(df.estimated_size() as u64));
    group.bench_function("polars_to_arrow_1M", |b| b.iter(|| convert::frame_to_batches(&df).unwrap()));
    group.bench_function("arrow_to_polars_1M", |b| b.iter(|| convert::batches_to_frame(&schema, &batches).unwrap()));
    group.finish();
}

fn ipc(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (schema, batches) = convert::frame_to_batches(&frame(ROWS)).unwrap();
    let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let encode = |batches: Vec<arrow::array::RecordBatch>| {
        FlightDataEncoderBuilder::new()
            .with_schema(schema.clone())
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
    };
    let encoded: Vec<_> = rt.block_on(encode(batches.clone()).try_collect()).unwrap();
    let mut group = c.benchmark_group("flight_ipc");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("encode_1M", |b| {
        b.to_async(&rt).iter(|| async { encode(batches.clone()).try_collect::<Vec<_>>().await.unwrap() })
    });
    group.bench_function("decode_1M", |b| {
        b.to_async(&rt).iter(|| async {
            let stream = futures::stream::iter(encoded.clone().into_iter().map(Ok));
            FlightRecordBatchStream::new_from_flight_data(stream).try_collect::<Vec<_>>().await.unwrap()
        })
    });
    group.finish();
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStateStore::open_dir(dir.path(), rt.handle().clone()).unwrap();
    let df = frame(ROWS);
    let meta = |handle: Handle| ResultMeta {
        handle,
        name: None,
        schema: describe_schema(&df),
        num_rows: df.height() as u64,
        num_bytes: 0,
        created_at: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
        pinned: false,
        lineage: Lineage { op: "upload".into(), params: serde_json::Value::Null, inputs: vec![] },
        affinity: String::new(),
        tenant: None,
        checksums: None,
    };
    let stored = store.put(&df, meta(Handle::random())).unwrap();
    let mut group = c.benchmark_group("store_directory");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(stored.num_bytes));
    group.bench_function("put_1M", |b| b.iter(|| store.put(&df, meta(Handle::random())).unwrap()));
    group.bench_function("load_1M", |b| b.iter(|| store.load(&stored.handle).unwrap()));
    group.bench_function("stream_batches_1M", |b| {
        b.iter(|| store.open_batches(&stored.handle).unwrap().batches.map(|b| b.unwrap().num_rows()).sum::<usize>())
    });
    group.finish();
}

fn operations(c: &mut Criterion) {
    let df = frame(ROWS);
    let limits = Config::with_store(StoreConfig::Memory).limits;
    let leaves = ops::Leaves::default();
    let mut group = c.benchmark_group("operations");
    group.sample_size(10);
    for (name, step) in [
        ("filter", serde_json::json!({"op": "filter", "predicate": "qty > 500 AND sym <> 'GOOG'"})),
        (
            "group_by",
            serde_json::json!({"op": "group_by", "by": ["sym"], "aggs": ["sum(qty) AS q", "avg(price) AS p"]}),
        ),
        ("sort", serde_json::json!({"op": "sort", "by": ["price", "id"]})),
        ("with_columns", serde_json::json!({"op": "with_columns", "columns": {"notional": "qty * price"}})),
    ] {
        let steps: Vec<Step> = vec![serde_json::from_value(step).unwrap()];
        group.bench_with_input(BenchmarkId::new(name, "1M"), &steps, |b, steps| {
            b.iter(|| ops::run_over(df.clone().into(), steps, &leaves, &limits, true).unwrap())
        });
    }
    group.finish();
    let _ = Arc::new(());
}

criterion_group!(benches, conversion, ipc, store, operations);
criterion_main!(benches);
