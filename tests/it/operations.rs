//! Every operation through the worker, compared with the same operation run directly in Polars
//! on the same data, in both store modes.

use polars::prelude::*;
use serde_json::{Value, json};

use crate::fixture::*;

fn trades() -> DataFrame {
    let ts = Series::new("ts".into(), (0..8i64).map(|h| h * 3_600_000).collect::<Vec<_>>())
        .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
        .unwrap();
    let mut df = df!(
        "sym" => ["AAPL", "MSFT", "AAPL", "GOOG", "MSFT", "AAPL", "GOOG", "MSFT"],
        "qty" => [Some(10i64), Some(25), None, Some(5), Some(40), Some(15), Some(7), Some(12)],
        "price" => [Some(100.0f64), Some(250.5), Some(101.0), None, Some(251.0), Some(99.5), Some(140.0), Some(249.0)],
        "day" => ["mon", "mon", "tue", "tue", "wed", "wed", "thu", "thu"],
    )
    .unwrap();
    df.with_column(ts.into_column()).unwrap();
    df
}

fn sectors() -> DataFrame {
    df!("sym" => ["AAPL", "MSFT", "IBM"], "sector" => ["tech", "software", "services"]).unwrap()
}

fn series4() -> DataFrame {
    let ts = Series::new("ts".into(), (0..4i64).map(|h| h * 3_600_000).collect::<Vec<_>>())
        .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
        .unwrap();
    let mut df = df!("qty" => [1i64, 2, 3, 4]).unwrap();
    df.with_column(ts.into_column()).unwrap();
    df
}

struct Case {
    op: &'static str,
    body: Value,
    want: DataFrame,
    ordered: bool,
}

fn case(op: &'static str, body: Value, want: DataFrame, ordered: bool) -> Case {
    Case { op, body, want, ordered }
}

fn lazy(df: &DataFrame) -> LazyFrame {
    df.clone().lazy()
}

/// Substitutes `$name` placeholders in a JSON body with handles.
fn bind(body: &Value, handles: &[(&str, String)]) -> Value {
    match body {
        Value::String(s) if s.starts_with('$') => {
            let h = handles.iter().find(|(n, _)| *n == &s[1..]).expect("known placeholder");
            Value::String(h.1.clone())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| bind(v, handles)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), bind(v, handles))).collect()),
        other => other.clone(),
    }
}

fn cases() -> Vec<Case> {
    let t = trades();
    let s = sectors();
    let s4 = series4();
    let ts_col = |vals: Vec<i64>| {
        Series::new("ts".into(), vals).cast(&DataType::Datetime(TimeUnit::Milliseconds, None)).unwrap().into_column()
    };
    let join =
        |how: JoinType| lazy(&t).join(lazy(&s), [col("sym")], [col("sym")], JoinArgs::new(how)).collect().unwrap();
    vec![
        case(
            "filter",
            json!({"input": "$t", "predicate": "qty > 10 AND sym = 'MSFT'"}),
            lazy(&t).filter(col("qty").gt(lit(10)).and(col("sym").eq(lit("MSFT")))).collect().unwrap(),
            true,
        ),
        case(
            "select",
            json!({"input": "$t", "columns": ["sym", "qty * 2 AS q2"]}),
            lazy(&t).select([col("sym"), (col("qty") * lit(2)).alias("q2")]).collect().unwrap(),
            true,
        ),
        case(
            "with_columns",
            json!({"input": "$t", "columns": {"notional": "qty * price"}}),
            lazy(&t).with_columns([(col("qty") * col("price")).alias("notional")]).collect().unwrap(),
            true,
        ),
        case(
            "sort",
            json!({"input": "$t", "by": ["price"], "descending": [true], "nulls_last": false}),
            t.sort(["price"], SortMultipleOptions::default().with_order_descending(true)).unwrap(),
            true,
        ),
        case(
            "group_by",
            json!({"input": "$t", "by": ["sym"], "aggs": ["sum(qty) AS total", "max(price) AS hi"]}),
            lazy(&t)
                .group_by([col("sym")])
                .agg([col("qty").sum().alias("total"), col("price").max().alias("hi")])
                .collect()
                .unwrap(),
            false,
        ),
        case("join", json!({"left": "$t", "right": "$s", "on": ["sym"], "how": "inner"}), join(JoinType::Inner), false),
        case("join", json!({"left": "$t", "right": "$s", "on": ["sym"], "how": "left"}), join(JoinType::Left), false),
        case("join", json!({"left": "$t", "right": "$s", "on": ["sym"], "how": "right"}), join(JoinType::Right), false),
        case("join", json!({"left": "$t", "right": "$s", "on": ["sym"], "how": "full"}), join(JoinType::Full), false),
        case("join", json!({"left": "$t", "right": "$s", "on": ["sym"], "how": "semi"}), join(JoinType::Semi), false),
        case("join", json!({"left": "$t", "right": "$s", "on": ["sym"], "how": "anti"}), join(JoinType::Anti), false),
        case(
            "join",
            json!({"left": "$t", "right": "$s", "how": "cross", "suffix": "_r"}),
            lazy(&t).cross_join(lazy(&s), Some("_r".into())).collect().unwrap(),
            false,
        ),
        case(
            "join",
            json!({"left": "$t", "right": "$s", "left_on": ["sym"], "right_on": ["sym"]}),
            join(JoinType::Inner),
            false,
        ),
        case("head", json!({"input": "$t", "n": 3}), t.head(Some(3)), true),
        case("tail", json!({"input": "$t", "n": 3}), t.tail(Some(3)), true),
        case("limit", json!({"input": "$t", "n": 2}), t.head(Some(2)), true),
        case("slice", json!({"input": "$t", "offset": 2, "length": 3}), t.slice(2, 3), true),
        case(
            "pipeline",
            json!({"input": "$t", "steps": [
                {"op": "filter", "predicate": "qty > 5"},
                {"op": "join", "right": "$s", "on": ["sym"]},
                {"op": "sort", "by": ["qty"], "descending": true},
                {"op": "head", "n": 2}
            ]}),
            lazy(&t)
                .filter(col("qty").gt(lit(5)))
                .join(lazy(&s), [col("sym")], [col("sym")], JoinArgs::new(JoinType::Inner))
                .sort(["qty"], SortMultipleOptions::default().with_order_descending(true))
                .limit(2)
                .collect()
                .unwrap(),
            true,
        ),
        case("drop", json!({"input": "$t", "columns": ["day", "ts"]}), t.drop_many(["day", "ts"]), true),
        case(
            "rename",
            json!({"input": "$t", "mapping": {"qty": "quantity"}}),
            lazy(&t).rename(["qty"], ["quantity"], true).collect().unwrap(),
            true,
        ),
        case(
            "cast",
            json!({"input": "$t", "dtypes": {"qty": "f64", "price": "i32"}, "strict": false}),
            lazy(&t)
                .with_columns([col("qty").cast(DataType::Float64), col("price").cast(DataType::Int32)])
                .collect()
                .unwrap(),
            true,
        ),
        case(
            "unique",
            json!({"input": "$t", "subset": ["sym"], "keep": "first"}),
            lazy(&t).unique_stable(Some(cols(["sym"])), UniqueKeepStrategy::First).collect().unwrap(),
            true,
        ),
        case(
            "drop_nulls",
            json!({"input": "$t", "subset": ["qty"]}),
            lazy(&t).drop_nulls(Some(cols(["qty"]))).collect().unwrap(),
            true,
        ),
        case(
            "fill_null",
            json!({"input": "$t", "value": 0, "columns": ["qty"]}),
            lazy(&t).with_columns([col("qty").fill_null(lit(0i64))]).collect().unwrap(),
            true,
        ),
        case(
            "fill_null",
            json!({"input": "$t", "strategy": "forward", "columns": ["qty", "price"]}),
            lazy(&t)
                .with_columns([
                    col("qty").fill_null_with_strategy(FillNullStrategy::Forward(None)),
                    col("price").fill_null_with_strategy(FillNullStrategy::Forward(None)),
                ])
                .collect()
                .unwrap(),
            true,
        ),
        case(
            "interpolate",
            json!({"input": "$t", "columns": ["price"]}),
            lazy(&t).with_columns([col("price").interpolate(InterpolationMethod::Linear)]).collect().unwrap(),
            true,
        ),
        case(
            "concat",
            json!({"inputs": ["$t", "$t"], "how": "vertical"}),
            concat([lazy(&t), lazy(&t)], UnionArgs::default()).unwrap().collect().unwrap(),
            true,
        ),
        case(
            "concat",
            json!({"inputs": ["$t", "$s"], "how": "diagonal"}),
            concat_lf_diagonal([lazy(&t), lazy(&s)], UnionArgs::default()).unwrap().collect().unwrap(),
            true,
        ),
        case(
            "concat",
            json!({"inputs": ["$s4", "$s"], "how": "horizontal"}),
            df!("qty" => [Some(1i64), Some(2), Some(3), Some(4)])
                .unwrap()
                .hstack(&[
                    ts_col(vec![0, 3_600_000, 7_200_000, 10_800_000]),
                    Column::new("sym".into(), [Some("AAPL"), Some("MSFT"), Some("IBM"), None]),
                    Column::new("sector".into(), [Some("tech"), Some("software"), Some("services"), None]),
                ])
                .unwrap(),
            true,
        ),
        case(
            "pivot",
            json!({"input": "$t", "on": ["day"], "index": ["sym"], "values": ["qty"], "agg": "sum"}),
            df!(
                "sym" => ["AAPL", "MSFT", "GOOG"],
                // As Python Polars 2.1 answers: a sum over no rows is 0.
                "mon" => [10i64, 25, 0],
                "tue" => [0i64, 0, 5],
                "wed" => [15i64, 40, 0],
                "thu" => [0i64, 12, 7],
            )
            .unwrap(),
            false,
        ),
        case(
            "unpivot",
            json!({"input": "$s4", "index": ["ts"], "on": ["qty"]}),
            df!("variable" => ["qty"; 4], "value" => [1i64, 2, 3, 4])
                .unwrap()
                .hstack(&[ts_col(vec![0, 3_600_000, 7_200_000, 10_800_000])])
                .unwrap()
                .select(["ts", "variable", "value"])
                .unwrap(),
            true,
        ),
        case(
            "resample",
            json!({"input": "$s4", "index": "ts", "every": "2h", "aggs": ["sum(qty) AS qty"]}),
            df!("qty" => [3i64, 7])
                .unwrap()
                .hstack(&[ts_col(vec![0, 7_200_000])])
                .unwrap()
                .select(["ts", "qty"])
                .unwrap(),
            true,
        ),
        case(
            "rolling",
            json!({"input": "$s4", "columns": ["qty"], "agg": "mean", "window_size": 2}),
            lazy(&s4)
                .with_columns([Column::new("qty_rolling_mean".into(), [None, Some(1.5f64), Some(2.5), Some(3.5)])
                    .as_materialized_series()
                    .clone()
                    .lit()])
                .collect()
                .unwrap(),
            true,
        ),
        case(
            "rolling",
            json!({"input": "$s4", "columns": ["qty"], "agg": "sum", "window": "2h", "by": "ts"}),
            lazy(&s4).with_columns([Series::new("qty_rolling_sum".into(), [1i64, 3, 5, 7]).lit()]).collect().unwrap(),
            true,
        ),
        case(
            "shift",
            json!({"input": "$s4", "n": 1, "columns": ["qty"]}),
            lazy(&s4)
                .with_columns([Series::new("qty".into(), [None, Some(1i64), Some(2), Some(3)]).lit()])
                .collect()
                .unwrap(),
            true,
        ),
        case(
            "shift",
            json!({"input": "$s4", "n": -1, "columns": ["qty"], "suffix": "_lead"}),
            lazy(&s4)
                .with_columns([Series::new("qty_lead".into(), [Some(2i64), Some(3), Some(4), None]).lit()])
                .collect()
                .unwrap(),
            true,
        ),
        case(
            "diff",
            json!({"input": "$s4", "columns": ["qty"]}),
            lazy(&s4)
                .with_columns([Series::new("qty".into(), [None, Some(1i64), Some(1), Some(1)]).lit()])
                .collect()
                .unwrap(),
            true,
        ),
        case(
            "pct_change",
            json!({"input": "$s4", "columns": ["qty"]}),
            lazy(&s4)
                .with_columns([Series::new("qty".into(), [None, Some(1.0f64), Some(0.5), Some(1.0 / 3.0)]).lit()])
                .collect()
                .unwrap(),
            true,
        ),
        case(
            "cum_sum",
            json!({"input": "$s4", "columns": ["qty"], "suffix": "_cum"}),
            lazy(&s4).with_columns([Series::new("qty_cum".into(), [1i64, 3, 6, 10]).lit()]).collect().unwrap(),
            true,
        ),
        case(
            "cumulative",
            json!({"input": "$s4", "kind": "prod", "columns": ["qty"]}),
            lazy(&s4).with_columns([Series::new("qty".into(), [1i64, 2, 6, 24]).lit()]).collect().unwrap(),
            true,
        ),
        case(
            "sample",
            json!({"input": "$t", "n": 3, "seed": 42}),
            t.sample_n_literal(3, false, Some(false), Some(42)).unwrap(),
            true,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_matches_polars_in_both_stores() {
    // The third run makes every input "too large to cache", so Polars scans the stored files.
    for (mode, cache_bytes) in [(Mode::Memory, 1 << 30), (Mode::External, 1 << 30), (Mode::External, 0)] {
        let server = TestServer::start_with(mode, |c| c.cache_bytes = cache_bytes).await;
        let mut client = server.client().await;
        let handles = vec![
            ("t", handle_of(&client.upload("trades", &trades()).await)),
            ("s", handle_of(&client.upload("sectors", &sectors()).await)),
            ("s4", handle_of(&client.upload("series", &series4()).await)),
        ];
        for Case { op, body, want, ordered } in cases() {
            let body = bind(&body, &handles);
            let context = format!("{mode:?} cache {cache_bytes} {op} {body}");
            let got = client.run(op, body.clone()).await.unwrap_or_else(|e| panic!("{context}: {e}"));
            if ordered {
                assert_same(&got, &want, &context);
            } else {
                assert_same_rows(&got, &want, &context);
            }
        }
        if let (Mode::External, 0) = (mode, cache_bytes) {
            let cache = server.engine.cache().unwrap();
            assert_eq!((cache.hits(), cache.misses()), (0, 0), "inputs were scanned, not loaded");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_operation_works_as_a_pipeline_step() {
    let server = TestServer::start(Mode::Memory).await;
    let mut client = server.client().await;
    let handles = vec![
        ("t", handle_of(&client.upload("trades", &trades()).await)),
        ("s", handle_of(&client.upload("sectors", &sectors()).await)),
        ("s4", handle_of(&client.upload("series", &series4()).await)),
    ];
    for Case { op, body, .. } in cases() {
        if op == "pipeline" {
            continue;
        }
        let body = bind(&body, &handles);
        let direct = client.run(op, body.clone()).await.unwrap();
        let mut step = body.as_object().unwrap().clone();
        let input = match op {
            "join" => step.remove("left").unwrap(),
            "concat" => {
                let mut inputs = step.remove("inputs").unwrap().as_array().unwrap().clone();
                let first = inputs.remove(0);
                step.insert("inputs".into(), Value::Array(inputs));
                first
            }
            _ => step.remove("input").unwrap(),
        };
        step.insert("op".into(), Value::String(op.into()));
        let piped = client
            .run("pipeline", json!({"input": input, "steps": [step]}))
            .await
            .unwrap_or_else(|e| panic!("pipeline step {op}: {e}"));
        assert_same_rows(&piped, &direct, &format!("pipeline step {op}"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_reports_statistics() {
    let server = TestServer::start(Mode::Memory).await;
    let mut client = server.client().await;
    let h = handle_of(&client.upload("series", &series4()).await);
    let got = client.run("describe", json!({"input": h})).await.unwrap();
    let stats: Vec<&str> = got.column("statistic").unwrap().str().unwrap().iter().map(|s| s.unwrap()).collect();
    assert_eq!(stats, ["count", "null_count", "mean", "std", "min", "25%", "50%", "75%", "max"]);
    let qty: Vec<Option<f64>> = got.column("qty").unwrap().f64().unwrap().iter().collect();
    let s = series4();
    let q = s.column("qty").unwrap().as_materialized_series();
    assert_eq!(qty[0], Some(4.0));
    assert_eq!(qty[1], Some(0.0));
    assert_eq!(qty[2], q.mean());
    assert_eq!(qty[3], q.std(1));
    assert_eq!(qty[4], Some(1.0));
    assert_eq!(qty[8], Some(4.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asof_join_matches_polars() {
    let server = TestServer::start(Mode::External).await;
    let mut client = server.client().await;
    let left = df!("t" => [1i64, 5, 10], "x" => ["a", "b", "c"]).unwrap();
    let right = df!("t" => [2i64, 4, 9], "v" => [20i64, 40, 90]).unwrap();
    let l = handle_of(&client.upload("l", &left).await);
    let r = handle_of(&client.upload("r", &right).await);
    for (strategy, want) in [
        ("backward", [None, Some(40i64), Some(90)]),
        ("forward", [Some(20), Some(90), None]),
        ("nearest", [Some(20), Some(40), Some(90)]),
    ] {
        let got =
            client.run("asof_join", json!({"left": l, "right": r, "on": "t", "strategy": strategy})).await.unwrap();
        let mut expected = left.clone();
        expected.with_column(Column::new("v".into(), want)).unwrap();
        assert_same(&got, &expected, strategy);
    }
    let got = client.run("asof_join", json!({"left": l, "right": r, "on": "t", "tolerance": 1})).await.unwrap();
    let mut expected = left.clone();
    expected.with_column(Column::new("v".into(), [None, Some(40i64), Some(90)])).unwrap();
    assert_same(&got, &expected, "tolerance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_nan_replaces_nan() {
    let server = TestServer::start(Mode::Memory).await;
    let mut client = server.client().await;
    let df = df!("x" => [1.0f64, f64::NAN, 3.0]).unwrap();
    let h = handle_of(&client.upload("nan", &df).await);
    let got = client.run("fill_nan", json!({"input": h, "value": 0.0})).await.unwrap();
    assert_same(&got, &df!("x" => [1.0f64, 0.0, 3.0]).unwrap(), "fill_nan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_read_and_write_inside_the_data_dir() {
    for mode in MODES {
        let server = TestServer::start(mode).await;
        let mut client = server.client().await;
        let root = server.data_dir.path();
        std::fs::write(root.join("in.csv"), "a,b\n1,x\n2,y\n3,z\n").unwrap();
        let got = client.run("read_csv", json!({"path": "in.csv"})).await.unwrap();
        let want = CsvReadOptions::default()
            .try_into_reader_with_file_path(Some(root.join("in.csv")))
            .unwrap()
            .finish()
            .unwrap();
        assert_same(&got, &want, "read_csv");

        let h = handle_of(&client.upload("t", &trades()).await);
        for (write, read, file) in
            [("write_parquet", "read_parquet", "t.parquet"), ("write_ipc", "read_ipc", "t.arrow")]
        {
            let out = client.action(write, json!({"input": h, "path": file})).await.unwrap();
            assert_eq!(out["num_rows"], 8);
            let back = client.run(read, json!({"path": file})).await.unwrap();
            assert_same(&back, &trades(), read);
        }
        let out = client.action("write_csv", json!({"input": h, "path": "t.csv"})).await.unwrap();
        assert!(out["num_bytes"].as_u64().unwrap() > 0);
        let text = std::fs::read_to_string(root.join("t.csv")).unwrap();
        assert!(text.starts_with("sym,qty,price,day,ts\n"), "{text}");
        server.stop().await;
    }
}
