//! Each error class with its gRPC status, the limits, idempotency, and surviving odd input.

use std::time::Duration;

use arrow_flight::{FlightDescriptor, Ticket};
use polars::prelude::*;
use serde_json::json;
use tonic::Code;

use crate::fixture::*;

fn frame() -> DataFrame {
    df!("sym" => ["a", "b", "a"], "qty" => [1i64, 2, 3]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_class_has_its_status() {
    for mode in MODES {
        let server = TestServer::start(mode).await;
        let mut c = server.client().await;
        let h = handle_of(&c.upload("t", &frame()).await);
        let missing = polarway::handle::Handle::random().to_string();

        let cases = [
            ("filter", json!({"input": missing, "predicate": "qty > 1"}), Code::NotFound, "not found"),
            ("filter", json!({"input": h, "predicate": "nope > 1"}), Code::InvalidArgument, "nope"),
            ("filter", json!({"input": h, "predicate": "qty >>> 1"}), Code::InvalidArgument, "predicate"),
            ("filter", json!({"input": h}), Code::InvalidArgument, "predicate"),
            (
                "filter",
                json!({"input": "../../etc/passwd", "predicate": "x"}),
                Code::InvalidArgument,
                "not a Polarway handle",
            ),
            ("no_such_op", json!({"input": h}), Code::InvalidArgument, "unknown operation"),
            ("select", json!({"input": h, "columns": ["missing_col"]}), Code::InvalidArgument, "missing_col"),
            ("cast", json!({"input": h, "dtypes": {"sym": "i64"}}), Code::InvalidArgument, "sym"),
            ("cast", json!({"input": h, "dtypes": {"qty": "wibble"}}), Code::InvalidArgument, "wibble"),
            (
                "sort",
                json!({"input": h, "by": ["qty"], "descending": [true, false]}),
                Code::InvalidArgument,
                "descending",
            ),
            ("join", json!({"left": h, "right": h, "how": "sideways", "on": ["sym"]}), Code::InvalidArgument, "how"),
            ("head", json!({"input": h, "n": -1}), Code::InvalidArgument, "head"),
            ("read_csv", json!({"path": "../secret.csv"}), Code::PermissionDenied, "outside"),
            ("read_csv", json!({"path": "/etc/passwd"}), Code::PermissionDenied, "outside"),
            ("write_csv", json!({"input": h, "path": "../out.csv"}), Code::PermissionDenied, "outside"),
            ("read_csv", json!({"path": "absent.csv"}), Code::NotFound, "absent.csv"),
            ("pin", json!({"handle": missing}), Code::NotFound, "not found"),
        ];
        for (op, body, code, needle) in cases {
            let err = c.action(op, body.clone()).await.unwrap_err();
            assert_eq!(err.code(), code, "{mode:?} {op} {body}: {err}");
            assert!(err.message().contains(needle), "{op} {body}: `{}` lacks `{needle}`", err.message());
            assert!(!err.message().contains(server.data_dir.path().to_str().unwrap()), "no server paths");
        }
        let raw = arrow_flight::Action::new("filter", "{not json");
        let err = to_status(c.inner.do_action(raw).await.err().unwrap());
        assert_eq!(err.code(), Code::InvalidArgument);

        let err = c.get(&missing).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = to_status(c.inner.do_get(Ticket::new(vec![0xffu8, 0, 1])).await.err().unwrap());
        assert_eq!(err.code(), Code::InvalidArgument);
        // The worker is still serving and the stored data is intact.
        assert_same(&c.get(&h).await.unwrap(), &frame(), "after errors");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_action_returns_the_same_handle_without_recomputing() {
    for mode in MODES {
        let server = TestServer::start(mode).await;
        let mut c = server.client().await;
        let h = handle_of(&c.upload("t", &frame()).await);
        let body = json!({"input": h, "predicate": "qty > 1"});
        let first = c.action("filter", body.clone()).await.unwrap();
        let runs = server.engine.executions();
        let second = c.action("filter", body).await.unwrap();
        assert_eq!(first, second, "{mode:?}");
        assert_eq!(server.engine.executions(), runs, "{mode:?}: no recomputation");
        // Key order in the body does not matter; parameters do.
        let reordered = c.action("filter", json!({"predicate": "qty > 1", "input": h})).await.unwrap();
        assert_eq!(handle_of(&reordered), handle_of(&first));
        let other = c.action("filter", json!({"input": h, "predicate": "qty > 2"})).await.unwrap();
        assert_ne!(handle_of(&other), handle_of(&first));
        // A sample without a seed is drawn anew each time.
        let a = c.action("sample", json!({"input": h, "n": 2})).await.unwrap();
        let b = c.action("sample", json!({"input": h, "n": 2})).await.unwrap();
        assert_ne!(handle_of(&a), handle_of(&b));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_with_an_idempotency_key_are_stored_once() {
    for mode in MODES {
        let server = TestServer::start(mode).await;
        let mut c = server.client().await;
        let cmd = json!({"name": "t", "idempotency_key": "batch-2026-11-28"}).to_string();
        let first = c.try_upload(FlightDescriptor::new_cmd(cmd.clone()), &frame()).await.unwrap();
        let second = c.try_upload(FlightDescriptor::new_cmd(cmd), &frame()).await.unwrap();
        assert_eq!(first, second);
        c.inner.add_header(polarway::flight::IDEMPOTENCY_KEY_HEADER, "via-header").unwrap();
        let third = c.upload("t", &frame()).await;
        let fourth = c.upload("t", &frame()).await;
        assert_eq!(third, fourth);
        assert_ne!(handle_of(&first), handle_of(&third));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_results_are_not_found_unless_pinned() {
    for mode in MODES {
        // Time moves when the test says: an hour's TTL passes without waiting for it.
        let clock = polarway::clock::ManualClock::shared();
        let shared = clock.clone();
        let server = TestServer::start_with(mode, move |c| {
            c.result_ttl = Duration::from_secs(3600);
            c.gc_interval = Duration::from_secs(60);
            c.clock = shared.clone();
        })
        .await;
        let mut c = server.client().await;
        let kept = handle_of(&c.upload("kept", &frame()).await);
        let gone = handle_of(&c.upload("gone", &df!("x" => [1i64]).unwrap()).await);
        c.action("pin", json!({"handle": kept})).await.unwrap();
        clock.advance(Duration::from_secs(3601));
        assert_eq!(c.get(&gone).await.unwrap_err().code(), Code::NotFound, "{mode:?}");
        assert_same(&c.get(&kept).await.unwrap(), &frame(), "pinned survives");
        // A sweep within one interval of expiry leaves it (reads opened before may finish);
        // one after deletes it.
        let gone_handle = polarway::handle::Handle::parse(&gone).unwrap();
        let store = server.engine.store();
        let stored = |h: &polarway::handle::Handle| tokio::task::block_in_place(|| store.meta(h).unwrap().is_some());
        assert_eq!(server.engine.sweep().await.unwrap().0, 0, "{mode:?}: within the read grace");
        assert!(stored(&gone_handle));
        clock.advance(Duration::from_secs(61));
        assert_eq!(server.engine.sweep().await.unwrap().0, 1, "{mode:?}: after the read grace");
        assert!(!stored(&gone_handle), "{mode:?}: expired result deleted");
        assert!(stored(&polarway::handle::Handle::parse(&kept).unwrap()));
        assert_eq!(server.engine.sweep().await.unwrap().0, 0, "nothing twice");
        c.action("unpin", json!({"handle": kept})).await.unwrap();
        assert_eq!(c.get(&kept).await.unwrap_err().code(), Code::NotFound);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_resource_exhausted() {
    let server = TestServer::start_with(Mode::Memory, |c| {
        c.limits.max_result_rows = 5;
        c.limits.max_join_rows = 4;
        c.limits.max_put_bytes = 100_000;
    })
    .await;
    let mut c = server.client().await;
    let small = handle_of(&c.upload("small", &frame()).await);
    let err = c
        .try_upload(FlightDescriptor::new_path(vec!["big".into()]), &df!("x" => (0..8i64).collect::<Vec<_>>()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("POLARWAY_MAX_RESULT_ROWS"));
    let err = c.action("join", json!({"left": small, "right": small, "how": "cross"})).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("cross join"));
    let wide = df!("s" => ["x".repeat(200_000)]).unwrap();
    let err = c.try_upload(FlightDescriptor::new_path(vec!["wide".into()]), &wide).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("POLARWAY_MAX_PUT_BYTES"));
    assert_same(&c.get(&small).await.unwrap(), &frame(), "stored data intact");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_deadline_exceeded() {
    let server = TestServer::start_with(Mode::Memory, |c| c.limits.request_timeout = Duration::from_millis(1)).await;
    let mut c = server.client().await;
    let df = df!("x" => (0..3000i64).collect::<Vec<_>>()).unwrap();
    let h = handle_of(&c.upload("x", &df).await);
    let err = c
        .action(
            "pipeline",
            json!({"input": h, "steps": [
                {"op": "join", "right": h, "how": "cross"},
                {"op": "group_by", "by": ["x"], "aggs": ["sum(x_right) AS s"]}
            ]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_input_leaves_the_worker_serving() {
    let server = TestServer::start(Mode::Memory).await;
    let mut c = server.client().await;
    let h = handle_of(&c.upload("t", &frame()).await);
    let ts = Series::new("ts".into(), [0i64, 3_600_000, 7_200_000])
        .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
        .unwrap();
    let mut timed = frame();
    timed.with_column(ts.into_column()).unwrap();
    timed
        .with_column(Column::new(
            "l".into(),
            [Series::new("".into(), [1i64]), Series::new("".into(), [2i64]), Series::new("".into(), [3i64])],
        ))
        .unwrap();
    let t = handle_of(&c.upload("timed", &timed).await);

    // Inputs on which Polars 0.55 itself panics: the worker answers INTERNAL and keeps serving.
    let panics = [
        ("resample", json!({"input": t, "index": "ts", "every": "1ns", "aggs": ["sum(qty) AS s"]})),
        ("unpivot", json!({"input": t, "index": ["sym"], "on": ["qty", "l"]})),
    ];
    for (op, body) in panics {
        let err = c.action(op, body.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{op} {body}: {err}");
        assert_same(&c.get(&h).await.unwrap(), &frame(), &format!("serving after {op}"));
    }
    // Inputs on which Polars would panic or run for hours are refused up front.
    let refused = [
        ("resample", json!({"input": t, "index": "ts", "every": "0h", "aggs": ["sum(qty) AS s"]})),
        ("resample", json!({"input": t, "index": "ts", "every": "1h", "period": "-2h", "aggs": ["sum(qty) AS s"]})),
        (
            "resample",
            json!({"input": t, "index": "ts", "every": "1h", "offset": "-99999999d", "aggs": ["sum(qty) AS s"]}),
        ),
        ("rolling", json!({"input": t, "columns": ["qty"], "window": "-1h", "by": "ts"})),
        ("cast", json!({"input": t, "dtypes": {"qty": "decimal(40, 50)"}})),
    ];
    for (op, body) in refused {
        let err = c.action(op, body.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{op} {body}: {err}");
    }
    // Odd but legal: any answer but a crash.
    let odd = [
        ("rolling", json!({"input": h, "columns": ["sym"], "agg": "std", "window_size": 2})),
        ("pivot", json!({"input": h, "on": ["qty"], "index": ["qty"], "values": ["qty"]})),
        ("slice", json!({"input": h, "offset": i64::MIN, "length": u32::MAX})),
        ("sample", json!({"input": h, "n": 10})),
        ("with_columns", json!({"input": h, "columns": {"x": "qty / 0"}})),
        ("group_by", json!({"input": h, "by": [], "aggs": []})),
        ("select", json!({"input": h, "columns": ["*", "*"]})),
        ("cast", json!({"input": h, "dtypes": {"qty": "datetime[ns, Not/AZone]"}})),
    ];
    for (op, body) in odd {
        if let Err(e) = c.action(op, body.clone()).await {
            assert!(
                matches!(e.code(), Code::InvalidArgument | Code::Internal | Code::ResourceExhausted),
                "{op} {body}: {e}"
            );
        }
        assert_same(&c.get(&h).await.unwrap(), &frame(), &format!("serving after {op}"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_store_is_unavailable_and_loses_nothing() {
    let server = TestServer::start(Mode::External).await;
    let mut c = server.client().await;
    let h = handle_of(&c.upload("t", &frame()).await);
    let state = server.state_dir.path();
    // The results directory replaced by a file (a broken mount): writes fail cleanly.
    std::fs::rename(state.join("results"), state.join("results.saved")).unwrap();
    std::fs::write(state.join("results"), b"not a directory").unwrap();
    let err = c.try_upload(FlightDescriptor::new_path(vec!["x".into()]), &frame()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(!err.message().contains(state.to_str().unwrap()), "no server paths: {err}");
    std::fs::remove_file(state.join("results")).unwrap();
    std::fs::rename(state.join("results.saved"), state.join("results")).unwrap();
    assert_same(&c.get(&h).await.unwrap(), &frame(), "stored data intact");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_sheds_load_quickly() {
    let server = TestServer::start_with(Mode::Memory, |c| {
        c.limits.max_concurrent_ops = 1;
        c.limits.queue_timeout = Duration::from_millis(50);
    })
    .await;
    let mut c = server.client().await;
    let df = df!("x" => (0..5000i64).collect::<Vec<_>>()).unwrap();
    let h = handle_of(&c.upload("x", &df).await);
    let slow = {
        let mut c2 = server.client().await;
        let h = h.clone();
        tokio::spawn(async move {
            c2.action(
                "pipeline",
                json!({"input": h, "steps": [
                    {"op": "join", "right": h, "how": "cross"},
                    {"op": "group_by", "by": ["x"], "aggs": ["sum(x_right) AS s"]}
                ]}),
            )
            .await
        })
    };
    // The slow operation has its slot once the engine counts it as running.
    while server.engine.executions() == 0 {
        tokio::task::yield_now().await;
    }
    let started = std::time::Instant::now();
    let err = c.action("filter", json!({"input": h, "predicate": "x > 1"})).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert_eq!(err.metadata().get("retry-after").unwrap(), "1", "a busy worker says when to retry");
    assert!(started.elapsed() < Duration::from_secs(2), "refused quickly: {:?}", started.elapsed());
    slow.await.unwrap().unwrap();
    // Once the slot frees, the same request succeeds.
    c.action("filter", json!({"input": h, "predicate": "x > 1"})).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_on_every_worker_at_once_delete_each_result_once() {
    let state = tempfile::tempdir().unwrap();
    let clock = polarway::clock::ManualClock::shared();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let dir = state.path().to_path_buf();
        let shared = clock.clone();
        workers.push(
            TestServer::start_with(Mode::External, move |c| {
                c.store = polarway::config::StoreConfig::Directory(dir);
                c.result_ttl = Duration::from_secs(60);
                c.gc_interval = Duration::from_secs(3600);
                c.clock = shared.clone();
            })
            .await,
        );
    }
    let mut c = workers[0].client().await;
    for i in 0..60i64 {
        c.upload("t", &df!("x" => [i]).unwrap()).await;
    }
    let pinned = handle_of(&c.upload("pinned", &frame()).await);
    c.action("pin", json!({"handle": pinned})).await.unwrap();
    // Past the TTL and the read grace of one sweep interval.
    clock.advance(Duration::from_secs(60 + 3600 + 1));
    let sweeps = workers.iter().map(|w| {
        let engine = w.engine.clone();
        tokio::spawn(async move { engine.sweep().await })
    });
    let mut deleted = 0;
    for sweep in sweeps.collect::<Vec<_>>() {
        deleted += sweep.await.unwrap().expect("no sweep fails on a result another deleted").0;
    }
    assert!(deleted <= 60, "each result deleted at most once: {deleted}");
    let left: Vec<_> =
        std::fs::read_dir(state.path().join("results")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "only the pinned result's files remain: {left:?}");
    assert_same(&c.get(&pinned).await.unwrap(), &frame(), "pinned is intact");
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_count_at_their_declared_size() {
    use arrow::ipc::CompressionType;
    use arrow::ipc::writer::IpcWriteOptions;
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use futures::TryStreamExt;

    let server = TestServer::start_with(Mode::Memory, |c| c.limits.max_put_bytes = 1 << 20).await;
    let mut c = server.client().await;
    let df = df!("x" => vec![7i64; 20_000]).unwrap();
    let (schema, batches) = polarway::convert::frame_to_batches(&df).unwrap();
    let options = IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME)).unwrap();
    let encoded: Vec<arrow_flight::FlightData> = FlightDataEncoderBuilder::new()
        .with_options(options)
        .with_schema(schema)
        .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_path(vec!["z".into()])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .try_collect()
        .await
        .unwrap();
    // Honest: 160 kB of values compress to almost nothing and fit the 1 MiB limit.
    let ok: Vec<_> = c
        .inner
        .do_put(futures::stream::iter(encoded.clone().into_iter().map(Ok)))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&ok[0].app_metadata).unwrap();
    assert_same(&c.get(meta["handle"].as_str().unwrap()).await.unwrap(), &df, "compressed upload");

    // A bomb: the same bytes declaring 1 TiB once decompressed.
    let mut bomb = encoded.clone();
    let last = bomb.last_mut().unwrap();
    let message = arrow::ipc::root_as_message(&last.data_header).unwrap();
    let buffers: Vec<_> = message.header_as_record_batch().unwrap().buffers().unwrap().iter().copied().collect();
    let mut body = last.data_body.to_vec();
    for b in buffers.iter().filter(|b| b.length() > 0) {
        body[b.offset() as usize..b.offset() as usize + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    }
    last.data_body = body.into();
    let err = c.inner.do_put(futures::stream::iter(bomb.into_iter().map(Ok))).await;
    let err = match err {
        Err(e) => to_status(e),
        Ok(stream) => to_status(stream.try_collect::<Vec<_>>().await.unwrap_err()),
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert_same(&c.get(meta["handle"].as_str().unwrap()).await.unwrap(), &df, "still serving");
    server.stop().await;
}

/// The inputs the fuzz targets crashed on (`fuzz/regressions/`), sent to a live worker: each gets
/// a client error, and the worker keeps serving what it stored before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_found_by_fuzzing_get_client_errors() {
    use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt};
    use base64::Engine as _;
    use futures::TryStreamExt;
    use prost::Message as _;

    let regressions = |target: &str| -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(p).unwrap()))
            .collect();
        inputs.sort();
        inputs
    };
    let client_error = |code: Code| matches!(code, Code::InvalidArgument | Code::ResourceExhausted);
    for mode in MODES {
        let server = TestServer::start(mode).await;
        let mut c = server.client().await;
        let h = handle_of(&c.upload("kept", &frame()).await);

        let uploads = regressions("flight_data");
        assert!(uploads.len() >= 2);
        for (name, data) in uploads {
            let messages = polarway::fuzz::flight_messages(&data);
            let err = match c.inner.do_put(futures::stream::iter(messages.into_iter().map(Ok))).await {
                Err(e) => to_status(e),
                Ok(stream) => to_status(stream.try_collect::<Vec<_>>().await.expect_err(&name)),
            };
            assert!(client_error(err.code()), "{name}: {err}");
        }

        let tickets = regressions("ticket");
        assert!(tickets.len() >= 4);
        for (name, data) in tickets {
            // A Flight SQL query command is not a ticket: UNIMPLEMENTED says so.
            let err = c.inner.do_get(Ticket::new(data.clone())).await.err().map(to_status).expect(&name);
            assert!(client_error(err.code()) || err.code() == Code::Unimplemented, "{name} as a ticket: {err}");
            let descriptor = FlightDescriptor::new_cmd(data.clone());
            let err = c.inner.get_flight_info(descriptor).await.err().map(to_status).expect(&name);
            assert!(client_error(err.code()), "{name} as a command: {err}");
            // As the parameters of a prepared statement, the way the fuzz target also reads it.
            let handle =
                json!({"query": "SELECT 1", "params": base64::engine::general_purpose::STANDARD.encode(&data)});
            let cmd = CommandPreparedStatementQuery { prepared_statement_handle: handle.to_string().into() };
            let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
            let err = c.inner.get_flight_info(descriptor).await.err().map(to_status).expect(&name);
            assert!(client_error(err.code()), "{name} as parameters: {err}");
        }

        assert_eq!(c.get(&h).await.unwrap(), frame(), "still serving");
        server.stop().await;
    }
}

/// Bombs that can be estimated are refused before they run: too many columns made by an
/// operation or sent in an upload, and a message over the size limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_and_oversize_input_is_refused() {
    let server = TestServer::start_with(Mode::Memory, |c| {
        c.limits.max_result_columns = 10;
        c.limits.max_message_bytes = 1 << 20;
    })
    .await;
    let mut c = server.client().await;
    let h = handle_of(&c.upload("small", &frame()).await);

    let columns: serde_json::Map<_, _> = (0..20).map(|i| (format!("c{i}"), json!("qty + 1"))).collect();
    let err = c.action("with_columns", json!({"input": h, "columns": columns})).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("POLARWAY_MAX_RESULT_COLUMNS"), "{err}");

    let wide = DataFrame::new(1, (0..20).map(|i| Column::new(format!("c{i}").into(), [1i64])).collect()).unwrap();
    let err = c.try_upload(FlightDescriptor::new_path(vec!["wide".into()]), &wide).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");

    // One 4 MiB string in a single message, past the 1 MiB message limit: refused by the
    // transport before it is decoded.
    let huge = df!("s" => ["x".repeat(4 << 20)]).unwrap();
    let err = c.try_upload(FlightDescriptor::new_path(vec!["huge".into()]), &huge).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("POLARWAY_MAX_MESSAGE_BYTES"), "{err}");

    assert_same(&c.get(&h).await.unwrap(), &frame(), "stored data intact");
    server.stop().await;
}
