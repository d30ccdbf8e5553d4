//! Entry points for coverage-guided fuzzing, compiled only with the `fuzzing` feature and driven
//! by the libFuzzer targets in `fuzz/`.
//!
//! Each entry takes arbitrary bytes and feeds them to one decoder that a client or the store
//! reaches, through the same functions the service calls, with the same limits. Errors are the
//! expected outcome for most inputs; a panic, an abort or a runaway allocation is a finding. The
//! worker turns a panic inside an operation into INTERNAL, but the fuzz targets abort on any
//! panic, so one that is merely caught still shows up.
//!
//! [`seeds`] builds each target's seed corpus from valid messages, so fuzzing starts from inputs
//! that reach deep into the decoders rather than from noise.

use std::sync::OnceLock;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::{Any, CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt};
use chrono::Utc;
use futures::{TryStreamExt, stream};
use polars::prelude::*;
use prost::Message;
use serde_json::json;

use crate::config::{Config, StoreConfig};
use crate::convert;
use crate::engine::request::Request;
use crate::flight::wire::Assembler;
use crate::handle::Handle;
use crate::limits::Limits;
use crate::ops::{self, Input};
use crate::store::{FileCapabilities, Lineage, ObjectStateStore, ResultMeta, ResultStore, describe_schema};

/// The fuzz targets, by name.
pub const TARGETS: [&str; 6] = ["ticket", "action", "plan", "flight_data", "artifact", "expr"];

/// The runtime and limits every entry shares: a worker's defaults with a 64 MiB upload limit,
/// so an input cannot make the fuzzer run out of memory by asking for what the limit allows.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    limits: Limits,
    store: ObjectStateStore,
    dir: std::path::PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let mut limits = Config::with_store(StoreConfig::Memory).limits;
        limits.max_put_bytes = 64 << 20;
        limits.max_join_rows = 1 << 20;
        let dir = std::env::temp_dir().join(format!("polarway-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("store directory");
        let store = ObjectStateStore::open_dir(&dir, runtime.handle().clone()).expect("store");
        Fixture { runtime, limits, store, dir }
    })
}

/// The frame every operation runs over: one column of each common type, with nulls.
pub fn sample_frame() -> DataFrame {
    let mut df = df!(
        "a" => [Some(1i64), Some(2), None, Some(4), Some(5)],
        "b" => [Some(0.5f64), None, Some(-2.0), Some(f64::NAN), Some(1e300)],
        "s" => [Some("x"), Some("y"), Some("x"), None, Some("a much longer string value")],
        "t" => [Some(true), Some(false), None, Some(true), Some(false)],
    )
    .expect("sample frame");
    let days = Series::new("d".into(), [0i32, 1, 365, -1, 19000]).cast(&DataType::Date).expect("dates");
    let times = Series::new("ts".into(), [0i64, 1_000_000, 3_600_000_000, -1, 1_700_000_000_000_000])
        .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
        .expect("datetimes");
    df.with_column(days.into_column()).expect("d");
    df.with_column(times.into_column()).expect("ts");
    df
}

/// A ticket as DoGet receives it: a handle, a Flight SQL command, or a prepared statement whose
/// parameters are an IPC stream inside base64 inside JSON.
pub fn ticket(data: &[u8]) {
    let _ = crate::flight::ticket::Ticket::parse(data);
    let _ = Request::parse_command(data);
    if let Some(command) = crate::flight::sql::decode(data)
        && let arrow_flight::sql::Command::CommandPreparedStatementQuery(p) = command
    {
        let _ = crate::flight::sql::prepared_statement(&p.prepared_statement_handle);
    }
    let _ = crate::flight::sql::prepared_statement(data);
    let _ = crate::flight::sql::parameter_values(data);
}

/// A native Polars expression's JSON, as a client sends it inside `{"expr": ...}`: checked and
/// decoded as a request's is (bounded depth first), then planned over [`sample_frame`], where
/// Polars resolves its names and types.
pub fn expr(data: &[u8]) {
    use crate::ops::expr::native;
    if native::json_depth(data) > native::MAX_JSON_DEPTH {
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(e) = native::decode("expr", &value) else { return };
    // Planning runs inside the worker's panic containment, as in the service.
    let _ = crate::contain::guard(crate::error::Error::Internal, || {
        let _ = sample_frame().lazy().with_columns([e]).collect_schema();
        Ok(())
    });
}

/// Expressions Python Polars 2.1 wrote for common queries: the `expr` target's seeds.
const EXPR_SEEDS: &[&str] = &[
    r#"{"BinaryExpr":{"left":{"Column":"a"},"op":"Gt","right":{"Literal":{"Dyn":{"Int":10}}}}}"#,
    r#"{"Alias":[{"Function":{"input":[{"Column":"s"}],"function":{"StringExpr":"Uppercase"}}},"u"]}"#,
    r#"{"Selector":{"ByDType":"Numeric"}}"#,
    r#"{"Over":{"function":{"Agg":{"Sum":{"Column":"a"}}},"partition_by":[{"Column":"s"}],"order_by":null,"mapping":"GroupsToRows"}}"#,
    r#"{"Ternary":{"predicate":{"BinaryExpr":{"left":{"Column":"a"},"op":"Gt","right":{"Literal":{"Dyn":{"Int":1}}}}},"truthy":{"Literal":{"Scalar":{"String":"x"}}},"falsy":{"Literal":{"Scalar":{"String":"y"}}}}}"#,
    r#"{"Function":{"input":[{"Column":"ts"}],"function":{"TemporalExpr":"Year"}}}"#,
    r#"{"Function":{"input":[{"Column":"a"}],"function":{"RollingExpr":{"function":"Mean","options":{"window_size":3,"min_periods":3,"weights":null,"center":false,"fn_params":null}}}}}"#,
    r#"{"Function":{"input":[{"Column":"b"},{"Literal":{"Dyn":{"Float":0.5}}}],"function":{"Quantile":{"method":"Nearest"}}}}"#,
    r#"{"Function":{"input":[{"Column":"a"}],"function":{"Rank":{"options":{"method":"Average","descending":false},"seed":null}}}}"#,
    r#"{"Function":{"input":[{"Column":"a"}],"function":{"CumSum":{"reverse":false}}}}"#,
    r#"{"SortBy":{"expr":{"Column":"a"},"by":[{"Column":"b"}],"sort_options":{"descending":[false],"nulls_last":[false],"multithreaded":true,"maintain_order":false,"limit":null}}}"#,
    r#"{"Function":{"input":[{"Column":"ts"},{"Literal":{"Scalar":{"String":"1d"}}}],"function":{"TemporalExpr":"Truncate"}}}"#,
];

/// A DoAction: the operation name on the first line, its JSON body after. A transform is
/// planned over [`sample_frame`] (every handle it names resolves to it) and its schema resolved,
/// which is where Polars checks names and types.
pub fn action(data: &[u8]) {
    let (op, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(op) = std::str::from_utf8(op) else { return };
    planned(op, body);
}

/// A plan tree: a `pipeline` body whose input, join sides and concat inputs are handles, scans,
/// datasets or sub-plans, decoded, bounded, and planned over [`sample_frame`] at every leaf.
pub fn plan(data: &[u8]) {
    planned("pipeline", data);
}

fn planned(op: &str, body: &[u8]) {
    let pipeline = match Request::parse(op, body) {
        Ok(Request::Transform { pipeline, .. } | Request::Explain { pipeline }) => pipeline,
        _ => return,
    };
    // Every leaf of the tree, a stored result or a scan, reads the sample frame.
    let mut leaves =
        ops::Leaves::of_frames(pipeline.handles().into_iter().map(|h| (h, Input::from(sample_frame()))).collect());
    for scan in pipeline.scans() {
        leaves.scans.insert(scan.key(), Input::from(sample_frame()));
    }
    let limits = &fixture().limits;
    let Ok(input) = (ops::Context { leaves: &leaves, limits }).source(&pipeline.input) else { return };
    if let Ok(mut plan) = ops::build(input, &pipeline.steps, &leaves, limits) {
        let _ = plan.collect_schema();
    }
}

/// A DoPut body: FlightData messages, each a little-endian u32 length and the protobuf, decoded
/// and converted to a Polars frame as an upload is. On the way, the messages are framed for gRPC
/// and put back together by the DoPut route's assembler, in chunks whose size the input picks,
/// which must give them back unchanged; the raw input is fed to the assembler too.
pub fn flight_data(data: &[u8]) {
    let messages = flight_messages(data);
    let chunk = 1 + data.iter().fold(0usize, |h, &b| h.wrapping_mul(31).wrapping_add(b as usize)) % 8192;
    let framed: Vec<u8> = messages
        .iter()
        .flat_map(|m| {
            let bytes = m.encode_to_vec();
            [&[0u8][..], &(bytes.len() as u32).to_be_bytes(), &bytes].concat()
        })
        .collect();
    let max = fixture().limits.max_message_bytes;
    let assembled = Assembler::assemble(&framed, chunk, max).expect("framed messages assemble");
    assert_eq!(assembled, messages, "the assembler changed the messages");
    let _ = Assembler::assemble(data, chunk, max);
    let Some((first, rest)) = messages.split_first() else { return };
    let rest: Vec<_> = rest.iter().cloned().map(Ok).collect();
    let f = fixture();
    let decoded = f.runtime.block_on(crate::flight::read_table(first.clone(), stream::iter(rest), f.limits.clone()));
    if let Ok((schema, batches)) = decoded {
        let _ = convert::batches_to_frame(&schema, &batches);
    }
}

/// A stored result file written before checksums existed (so read unchecked, as such files are):
/// streamed as DoGet does, loaded as an input is, and scanned as Polars would.
pub fn artifact(data: &[u8]) {
    let f = fixture();
    let handle = Handle::derive(b"fuzzed artifact");
    let path = f.dir.join("results").join(format!("{handle}.arrow"));
    if std::fs::create_dir_all(path.parent().expect("parent")).is_err() || std::fs::write(&path, data).is_err() {
        return;
    }
    let now = Utc::now();
    let meta = ResultMeta {
        handle: handle.clone(),
        name: None,
        schema: describe_schema(&sample_frame()),
        num_rows: 5,
        num_bytes: data.len() as u64,
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
        pinned: false,
        lineage: Lineage { op: "upload".into(), params: json!({}), inputs: vec![] },
        affinity: String::new(),
        tenant: None,
        checksums: None,
    };
    if f.store.write_meta(&meta).is_err() {
        return;
    }
    if let Ok(stream) = f.store.open_batches(&handle) {
        for batch in stream.batches {
            if batch.is_err() {
                break;
            }
        }
    }
    let _ = f.store.load(&handle);
    if let Ok(Some(lf)) = f.store.scan(&handle) {
        let _ = lf.collect();
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("arrow.damaged"));
}

/// The FlightData messages of a `flight_data` input: each a little-endian u32 length and the
/// protobuf; decoding stops at the first that does not parse.
pub fn flight_messages(mut data: &[u8]) -> Vec<FlightData> {
    let mut messages = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        let end = (4 + len).min(data.len());
        match FlightData::decode(&data[4..end]) {
            Ok(message) => messages.push(message),
            Err(_) => break,
        }
        data = &data[end..];
    }
    messages
}

fn join_messages(messages: &[FlightData]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        let bytes = message.encode_to_vec();
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn sample_batches() -> (SchemaRef, Vec<RecordBatch>) {
    convert::frame_to_batches(&sample_frame()).expect("sample batches")
}

fn write_options() -> Vec<IpcWriteOptions> {
    let plain = IpcWriteOptions::default();
    let lz4 = plain.clone().try_with_compression(Some(CompressionType::LZ4_FRAME)).expect("lz4");
    let zstd = plain.clone().try_with_compression(Some(CompressionType::ZSTD)).expect("zstd");
    vec![plain, lz4, zstd]
}

/// Valid inputs for a target, to start its corpus from.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let (schema, batches) = sample_batches();
    match target {
        "ticket" => {
            let query =
                |q: &str| CommandStatementQuery { query: q.into(), transaction_id: None }.as_any().encode_to_vec();
            let mut params = Vec::new();
            {
                let mut writer = StreamWriter::try_new(&mut params, &schema).expect("writer");
                writer.write(&batches[0].slice(0, 1)).expect("write");
                writer.finish().expect("finish");
            }
            use base64::Engine as _;
            let prepared = json!({"query": "SELECT * FROM t WHERE a = $1", "params": base64::engine::general_purpose::STANDARD.encode(&params)})
                .to_string();
            let prepared_cmd = CommandPreparedStatementQuery { prepared_statement_handle: prepared.clone().into() }
                .as_any()
                .encode_to_vec();
            vec![
                Handle::derive(b"seed").to_string().into_bytes(),
                query("SELECT a, sum(b) FROM t GROUP BY a"),
                prepared.into_bytes(),
                prepared_cmd,
                params,
                json!({"op": "filter", "input": Handle::derive(b"seed").to_string(), "predicate": "a > 1"})
                    .to_string()
                    .into_bytes(),
                Any {
                    type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandGetTables".into(),
                    value: vec![].into(),
                }
                .encode_to_vec(),
            ]
        }
        "action" => action_seeds(),
        "plan" => plan_seeds(),
        "expr" => EXPR_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(),
        "flight_data" => write_options()
            .into_iter()
            .map(|options| {
                let encoder = FlightDataEncoderBuilder::new()
                    .with_options(options)
                    .build(stream::iter(batches.clone().into_iter().map(Ok)));
                let messages: Vec<FlightData> = fixture().runtime.block_on(encoder.try_collect()).expect("encoded");
                join_messages(&messages)
            })
            .collect(),
        "artifact" => write_options()
            .into_iter()
            .map(|options| {
                let mut file = Vec::new();
                let mut writer = FileWriter::try_new_with_options(&mut file, &schema, options).expect("writer");
                for batch in &batches {
                    writer.write(batch).expect("write");
                }
                writer.finish().expect("finish");
                drop(writer);
                file
            })
            .collect(),
        other => panic!("no fuzz target `{other}`"),
    }
}

fn plan_seeds() -> Vec<Vec<u8>> {
    let h = Handle::derive(b"seed").to_string();
    let scan = json!({"scan": {"format": "parquet", "path": "lake/sales/**/*.parquet", "hive_partitioning": true}});
    let csv = json!({"scan": {"format": "csv", "path": "x.csv", "csv": {"separator": ";", "schema_overrides": {"a": "i64"}}}});
    let sub = json!({"input": {"dataset": "sales"}, "steps": [{"op": "filter", "predicate": "a > 1"}]});
    let trees = [
        json!({"input": scan, "steps": [{"op": "select", "columns": ["a", "s"]}]}),
        json!({"input": h, "steps": [{"op": "join", "right": sub, "on": ["a"], "how": "semi"}]}),
        json!({"input": sub, "steps": [{"op": "concat", "inputs": [csv, h, sub], "how": "diagonal"}]}),
        json!({"input": {"input": sub, "steps": [{"op": "head", "n": 2}]}, "steps": [
            {"op": "join", "right": {"input": scan, "steps": []}, "how": "cross"},
            {"op": "join_where", "right": sub, "predicates": ["a < a_right"]},
            {"op": "asof_join", "right": h, "on": "ts"}
        ]}),
    ];
    trees.iter().map(|t| t.to_string().into_bytes()).collect()
}

fn action_seeds() -> Vec<Vec<u8>> {
    let h = Handle::derive(b"seed").to_string();
    let r = Handle::derive(b"right").to_string();
    let actions = [
        ("filter", json!({"input": h, "predicate": "a > 1 and s != 'x'"})),
        ("select", json!({"input": h, "columns": ["a", "s"]})),
        ("with_columns", json!({"input": h, "columns": {"c": "a * 2 + b", "u": "upper(s)"}})),
        ("group_by", json!({"input": h, "by": ["s"], "aggs": ["sum(a) AS total", "mean(b) AS m"]})),
        ("sort", json!({"input": h, "by": ["a"], "descending": [true]})),
        ("join", json!({"left": h, "right": r, "on": ["a"], "how": "left"})),
        ("join", json!({"left": h, "right": r, "how": "cross"})),
        ("head", json!({"input": h, "n": 3})),
        ("unique", json!({"input": h, "subset": ["s"], "keep": "first"})),
        ("pivot", json!({"input": h, "on": ["s"], "index": ["t"], "values": ["a"], "agg": "sum"})),
        ("concat", json!({"inputs": [h, r]})),
        ("asof_join", json!({"left": h, "right": r, "on": "ts", "by": ["s"], "strategy": "backward"})),
        ("resample", json!({"input": h, "index": "ts", "every": "1h", "aggs": ["sum(a) AS s"]})),
        ("rolling", json!({"input": h, "columns": ["a"], "agg": "mean", "window_size": 2})),
        ("cast", json!({"input": h, "dtypes": {"a": "f64", "s": "str"}})),
        ("fill_null", json!({"input": h, "strategy": "forward"})),
        ("unpivot", json!({"input": h, "index": ["s"], "on": ["a", "b"]})),
        (
            "pipeline",
            json!({"input": h, "steps": [
                {"op": "filter", "predicate": "b > 0"},
                {"op": "with_columns", "columns": {"k": "a % 2"}},
                {"op": "group_by", "by": ["k"], "aggs": ["count(a) AS n"]},
                {"op": "sort", "by": ["k"]}
            ]}),
        ),
        ("explain", json!({"input": h, "steps": [{"op": "select", "columns": ["a"]}]})),
    ];
    for (op, body) in &actions {
        // A seed that does not parse would only teach the fuzzer the error path.
        if let Err(e) = Request::parse(op, body.to_string().as_bytes()) {
            panic!("seed `{op}` is not a valid request: {e}");
        }
    }
    actions.iter().map(|(op, body)| format!("{op}\n{body}").into_bytes()).collect()
}

/// Sets a fuzz target up: a panic is fatal (libFuzzer's hook aborts) unless it happens where the
/// service contains it on purpose ([`crate::contain::guard`]); and when `seed_dir` names a directory
/// (the targets pass `POLARWAY_FUZZ_SEEDS`), `target`'s seeds are written there as `seed-<n>`
/// files, so the run starts from them.
pub fn init(target: &str, seed_dir: Option<std::path::PathBuf>) {
    let fatal = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !crate::contain::guarded() {
            fatal(info);
        }
    }));
    let Some(dir) = seed_dir else { return };
    std::fs::create_dir_all(&dir).expect("seed directory");
    for (i, seed) in seeds(target).iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("seed written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input a fuzz run ever crashed on (kept in `fuzz/regressions/<target>/`) runs through
    /// its target without a panic escaping; contained ones are allowed, as in the service.
    /// The path is relative: `cargo test` runs from the package root, and a path fixed at compile
    /// time would go stale when one target directory serves several checkouts.
    #[test]
    fn fuzz_regressions_replay_cleanly() {
        let root = std::path::Path::new("fuzz/regressions");
        let mut replayed = 0;
        for target in TARGETS {
            let Ok(entries) = std::fs::read_dir(root.join(target)) else { continue };
            for entry in entries {
                let data = std::fs::read(entry.unwrap().path()).unwrap();
                match target {
                    "ticket" => ticket(&data),
                    "action" => action(&data),
                    "plan" => plan(&data),
                    "flight_data" => flight_data(&data),
                    "expr" => expr(&data),
                    _ => artifact(&data),
                }
                replayed += 1;
            }
        }
        assert!(replayed >= 7, "the regression inputs are missing: {replayed}");
    }

    #[test]
    fn seeds_are_accepted_by_their_targets() {
        for target in TARGETS {
            assert!(!seeds(target).is_empty(), "{target}");
        }
        let (schema, batches) = sample_batches();
        for seed in seeds("flight_data") {
            let mut body = flight_messages(&seed);
            let head = body.remove(0);
            let f = fixture();
            let (got_schema, got) = f
                .runtime
                .block_on(crate::flight::read_table(head, stream::iter(body.into_iter().map(Ok)), f.limits.clone()))
                .unwrap();
            assert_eq!(got_schema, schema);
            assert_eq!(got, batches);
        }
    }
}
