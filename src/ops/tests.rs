use std::collections::HashMap;

use polars::prelude::*;

use super::*;
use crate::config::{Config, StoreConfig};

fn limits() -> Limits {
    Config::with_store(StoreConfig::Memory).limits
}

/// Steps over `input`, with `frames` the stored results they name.
fn run(input: Input, steps: &[Step], frames: &HashMap<Handle, Input>, limits: &Limits) -> Result<DataFrame> {
    super::run_over(input, steps, &Leaves::of_frames(frames.clone()), limits, true)
}

/// The plan of steps over `input`, with `frames` the stored results they name.
fn build(input: Input, steps: &[Step], frames: &HashMap<Handle, Input>, limits: &Limits) -> Result<LazyFrame> {
    super::build(input, steps, &Leaves::of_frames(frames.clone()), limits)
}

fn step(json: serde_json::Value) -> Step {
    serde_json::from_value(json).unwrap()
}

#[test]
fn pipeline_matches_polars() {
    let df = df!("sym" => ["a", "b", "a", "c"], "qty" => [5i64, 20, 30, 40]).unwrap();
    let steps = vec![
        step(serde_json::json!({"op": "filter", "predicate": "qty > 10"})),
        step(serde_json::json!({"op": "with_columns", "columns": {"q2": "qty * 2"}})),
        step(serde_json::json!({"op": "head", "n": 2})),
    ];
    let got = run(df.clone().into(), &steps, &HashMap::new(), &limits()).unwrap();
    let want = df
        .lazy()
        .filter(col("qty").gt(lit(10)))
        .with_columns([(col("qty") * lit(2)).alias("q2")])
        .limit(2)
        .collect()
        .unwrap();
    assert!(got.equals_missing(&want), "{got}\n{want}");
}

#[test]
fn cross_join_guard_refuses_before_running() {
    let df = df!("a" => (0..1000i64).collect::<Vec<_>>()).unwrap();
    let right = Handle::random();
    let frames = HashMap::from([(right.clone(), Input::from(df.clone()))]);
    let mut limits = limits();
    limits.max_join_rows = 10_000;
    let steps = vec![step(serde_json::json!({"op": "join", "right": right, "how": "cross"}))];
    let err = build(df.into(), &steps, &frames, &limits).err().expect("refused");
    assert!(matches!(err, Error::LimitExceeded { limit: crate::limits::Limit::JoinRows, .. }), "{err:?}");
}

#[test]
fn keyed_joins_are_refused_by_their_matched_pairs_not_their_sides() {
    // 1,000 rows on each side: a product of 1,000,000, past the limit of 10,000.
    let keyed = |keys: Vec<i64>| df!("k" => keys, "v" => (0..1000i64).collect::<Vec<_>>()).unwrap();
    let join =
        |right: &Handle, how: &str| step(serde_json::json!({"op": "join", "right": right, "on": ["k"], "how": how}));
    let mut limits = limits();
    limits.max_join_rows = 10_000;
    let unique = Handle::random();
    let repeated = Handle::random();
    let frames = HashMap::from([
        (unique.clone(), Input::from(keyed((0..1000).collect()))),
        (repeated.clone(), Input::from(keyed((0..1000).map(|i| i % 10).collect()))),
    ]);
    // Unique keys: 1,000 pairs; it runs and gives them all.
    for how in ["inner", "left", "full"] {
        let out = run(keyed((0..1000).collect()).into(), &[join(&unique, how)], &frames, &limits).unwrap();
        assert_eq!(out.height(), 1000, "{how}");
    }
    // Ten values repeated 100 times on both sides: 10 x 100 x 100 = 100,000 pairs.
    let repeated_left = || Input::from(keyed((0..1000).map(|i| i % 10).collect()));
    for how in ["inner", "left", "right", "full"] {
        let err = build(repeated_left(), &[join(&repeated, how)], &frames, &limits).err().expect("refused");
        assert!(matches!(err, Error::LimitExceeded { limit: crate::limits::Limit::JoinRows, .. }), "{how}: {err:?}");
        // The pairs, plus at most every row of the side(s) an outer join keeps unmatched.
        assert!(err.to_string().contains(&format!("{how} join would produce 10")), "{how}: {err}");
    }
    // Repeated on one side only: 1,000 pairs.
    let out = run(repeated_left(), &[join(&unique, "inner")], &frames, &limits).unwrap();
    assert_eq!(out.height(), 1000);
    // Semi and anti joins never produce more rows than their left side.
    run(repeated_left(), &[join(&repeated, "semi")], &frames, &limits).unwrap();
    // A pipeline's earlier steps are counted through: the filter leaves one value on the left.
    let filtered = [step(serde_json::json!({"op": "filter", "predicate": "k = 3"})), join(&repeated, "inner")];
    assert_eq!(run(repeated_left(), &filtered, &frames, &limits).unwrap().height(), 100 * 100);
}

#[test]
fn expanding_expressions_are_tried_on_one_row_first() {
    let df = df!("s" => vec!["ab"; 1000]).unwrap();
    let mut limits = limits();
    limits.max_result_bytes = 1 << 20;
    let padded = |width: u64| {
        vec![step(serde_json::json!({"op": "with_columns", "columns": {"p": format!("lpad(s, {width}, 'x')")}}))]
    };
    assert!(padded(10).iter().any(Step::expands));
    // 1,000 rows of 10 bytes fit; 1,000 rows of 10,000 bytes (10 MB) do not, and are refused
    // before they are made.
    assert_eq!(run(df.clone().into(), &padded(10), &HashMap::new(), &limits).unwrap().height(), 1000);
    let err = run(df.clone().into(), &padded(10_000), &HashMap::new(), &limits).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { limit: crate::limits::Limit::ResultBytes, .. }), "{err:?}");
    assert!(err.to_string().contains("POLARWAY_MAX_RESULT_BYTES"), "{err}");
    let plain = [step(serde_json::json!({"op": "filter", "predicate": "s = 'ab'"}))];
    assert!(!plain.iter().any(Step::expands));
}

#[test]
fn column_parameters_are_names_not_patterns() {
    // Polars' `col` reads `*` and `^...$` as patterns; a `*` resample index panicked inside it.
    let df = df!("a" => [1i64, 2]).unwrap();
    for index in ["*", "^a$"] {
        let steps =
            vec![step(serde_json::json!({"op": "resample", "index": index, "every": "1h", "aggs": ["sum(a)"]}))];
        let err = run(df.clone().into(), &steps, &HashMap::new(), &limits()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{index}: {err:?}");
    }
    let steps = vec![step(serde_json::json!({"op": "fill_null", "columns": ["*"], "value": 0}))];
    assert!(run(df.into(), &steps, &HashMap::new(), &limits()).is_err(), "no column is named `*`");
}

#[test]
fn unknown_parameter_values_name_the_parameter() {
    // Choices are enums: a bad one is refused as the body is read, naming the parameter.
    let err = Step::from_json(serde_json::json!({"op": "unique", "keep": "sometimes"})).unwrap_err();
    assert!(err.to_string().contains("`keep`"), "{err}");
    assert!(err.to_string().contains("`first`, `last`, `any`, `none`"), "{err}");
}

#[test]
fn sample_without_seed_is_not_deterministic() {
    assert!(!step(serde_json::json!({"op": "sample", "n": 1})).is_deterministic());
    assert!(step(serde_json::json!({"op": "sample", "n": 1, "seed": 3})).is_deterministic());
}

#[test]
fn group_by_sum_is_null_over_no_values_and_keeps_the_sql_names() {
    let df = df!(
        "k" => ["a", "a", "b", "c"],
        "v" => [Some(1i64), Some(2), None, Some(5)],
    )
    .unwrap();
    let steps = vec![step(serde_json::json!({
        "op": "group_by", "by": ["k"], "aggs": ["sum(v) AS total", "count(v) AS n", "SUM(\"v\")"], "maintain_order": true
    }))];
    let out = run(df.into(), &steps, &HashMap::new(), &limits()).unwrap();
    let want = df!(
        "k" => ["a", "b", "c"],
        "total" => [Some(3i64), None, Some(5)],
        "n" => [2u32, 0, 1],
        "v" => [Some(3i64), None, Some(5)],
    )
    .unwrap();
    assert_eq!(out.get_column_names(), want.get_column_names());
    assert!(out.column("total").unwrap().equals_missing(want.column("total").unwrap()), "{out}");
    assert!(out.column("v").unwrap().equals_missing(want.column("v").unwrap()), "{out}");
}

#[test]
fn with_columns_keep_the_order_they_were_sent_in() {
    let df = df!("a" => [1i64]).unwrap();
    let body = br#"{"input": "HANDLE", "columns": {"zeta": "a", "alpha": "a + 1", "mid": "a + 2"}}"#;
    let body = String::from_utf8_lossy(body).replace("HANDLE", &Handle::random().to_string());
    let crate::engine::request::Request::Transform { pipeline, .. } =
        crate::engine::request::Request::parse("with_columns", body.as_bytes()).unwrap()
    else {
        panic!("a transform")
    };
    let out = run(df.into(), &pipeline.steps, &HashMap::new(), &limits()).unwrap();
    let names: Vec<&str> = out.get_column_names().iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["a", "zeta", "alpha", "mid"]);
}

#[test]
fn native_and_sql_expressions_mix_in_one_pipeline() {
    let df = df!("sym" => ["a", "b", "a"], "qty" => [Some(5i64), None, Some(30)]).unwrap();
    // `pl.col("qty") > 10` and `pl.col("qty").sum().alias("total")`, as Python Polars writes them.
    let gt = serde_json::json!({"BinaryExpr": {"left": {"Column": "qty"}, "op": "Gt", "right": {"Literal": {"Dyn": {"Int": 1}}}}});
    let total = serde_json::json!({"Alias": [{"Agg": {"Sum": {"Column": "qty"}}}, "total"]});
    let steps = vec![
        step(serde_json::json!({"op": "filter", "predicate": {"expr": gt}})),
        step(
            serde_json::json!({"op": "group_by", "by": ["sym"], "aggs": [{"expr": total}, "count(qty) AS n"], "maintain_order": true}),
        ),
        step(serde_json::json!({"op": "sort", "by": [{"expr": {"Column": "total"}}], "descending": true})),
    ];
    let got = run(df.clone().into(), &steps, &HashMap::new(), &limits()).unwrap();
    let want = df
        .lazy()
        .filter(col("qty").gt(lit(1)))
        .group_by_stable([col("sym")])
        .agg([col("qty").sum().alias("total"), col("qty").count().alias("n")])
        .sort(["total"], SortMultipleOptions::default().with_order_descending(true))
        .collect()
        .unwrap();
    assert!(got.equals_missing(&want), "{got}\n{want}");
    // A refused node fails the step, naming the parameter and the node.
    let udf =
        serde_json::json!({"AnonymousFunction": {"input": [{"Column": "qty"}], "function": [80, 76], "options": {}}});
    let steps = vec![step(serde_json::json!({"op": "filter", "predicate": {"expr": udf}}))];
    let err = build(df!("qty" => [1i64]).unwrap().into(), &steps, &HashMap::new(), &limits()).err().unwrap();
    assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("`predicate`"), "{err}");
}

#[test]
fn new_operations_match_polars() {
    let df = df!("k" => [3i64, 1, 2, 5, 4], "tags" => [Some(vec![1i64, 2]), None, Some(vec![]), Some(vec![3]), Some(vec![4, 5])].into_iter().map(|v| v.map(|v| Series::new("".into(), v))).collect::<ListChunked>().into_series()).unwrap();
    let check = |body: serde_json::Value, want: LazyFrame| {
        let got = run(df.clone().into(), &[step(body.clone())], &HashMap::new(), &limits()).unwrap();
        let want = want.collect().unwrap();
        assert!(got.equals_missing(&want), "{body}\n{got}\n{want}");
    };
    let lf = || df.clone().lazy();
    check(serde_json::json!({"op": "reverse"}), lf().reverse());
    check(
        serde_json::json!({"op": "top_k", "k": 2, "by": ["k"]}),
        lf().sort(["k"], SortMultipleOptions::default().with_order_descending(true)).limit(2),
    );
    check(
        serde_json::json!({"op": "bottom_k", "k": 2, "by": ["k"]}),
        lf().sort(["k"], SortMultipleOptions::default()).limit(2),
    );
    check(
        serde_json::json!({"op": "gather_every", "n": 2, "offset": 1}),
        concat([lf().slice(1, 1), lf().slice(3, 1)], UnionArgs::default()).unwrap(),
    );
    check(serde_json::json!({"op": "with_row_index", "name": "i", "offset": 10}), lf().with_row_index("i", Some(10)));
    check(
        serde_json::json!({"op": "explode", "columns": ["tags"]}),
        lf().explode(cols(["tags"]), ExplodeOptions { empty_as_null: false, keep_nulls: true }),
    );
}

#[test]
fn a_cross_join_of_plans_counts_the_rows_they_make() {
    // One aggregate row over a join: its count is 1, however many rows the join makes.
    let facts = df!("k" => (0..1000i64).map(|i| i % 10).collect::<Vec<_>>(), "v" => vec![1.0f64; 1000]).unwrap();
    let keys = df!("k" => (0..10i64).collect::<Vec<_>>()).unwrap();
    let plan = |steps: serde_json::Value| -> Source {
        serde_json::from_value(serde_json::json!({"input": {"dataset": "facts"}, "steps": steps})).unwrap()
    };
    let total = plan(serde_json::json!([
        {"op": "join", "right": {"dataset": "keys"}, "on": ["k"]},
        {"op": "select", "columns": ["sum(v) AS total"]}
    ]));
    let mut leaves = Leaves::default();
    for (name, frame) in [("facts", &facts), ("keys", &keys)] {
        let source = Source::Dataset(name.into());
        leaves.scans.insert(source.key(), Input { lf: frame.clone().lazy(), rows: UNKNOWN_ROWS });
    }
    let mut limits = limits();
    limits.max_join_rows = 10_000;
    let pipeline = Pipeline {
        input: Source::Dataset("facts".into()),
        steps: vec![step(serde_json::json!({"op": "join", "right": total, "how": "cross"}))],
    };
    let out = super::run(&pipeline, &leaves, &limits).unwrap();
    assert_eq!(out.height(), 1000);
    assert!(out.column("total").is_ok());
}

#[test]
fn a_select_of_aggregations_makes_one_row_whatever_its_input() {
    let sel = |cols: serde_json::Value| step(serde_json::json!({"op": "select", "columns": cols}));
    let df = df!("v" => [1.0f64, 2.0, 3.0]).unwrap();
    let cx_leaves = Leaves::default();
    let cx = Context { leaves: &cx_leaves, limits: &limits() };
    for (cols, want) in [
        (serde_json::json!(["sum(v) * 0.1 AS t"]), 1),
        (serde_json::json!(["count(v) AS n", "max(v) AS hi"]), 1),
        (serde_json::json!(["v"]), UNKNOWN_ROWS),
        (serde_json::json!(["v * 2 AS w"]), UNKNOWN_ROWS),
    ] {
        assert_eq!(sel(cols.clone()).0.rows(UNKNOWN_ROWS, &df.clone().lazy(), &cx).unwrap(), want, "{cols}");
    }
}
