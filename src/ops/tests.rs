use std::collections::HashMap;

use polars::prelude::*;

use super::*;
use crate::config::{Config, StoreConfig};

fn limits() -> Limits {
    Config::with_store(StoreConfig::Memory).limits
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
    let steps = vec![Step::Join {
        right,
        on: vec![],
        left_on: vec![],
        right_on: vec![],
        how: "cross".into(),
        suffix: None,
    }];
    let err = build(df.into(), &steps, &frames, &limits).err().expect("refused");
    assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
}

#[test]
fn keyed_joins_are_refused_by_their_matched_pairs_not_their_sides() {
    // 1,000 rows on each side: a product of 1,000,000, past the limit of 10,000.
    let keyed = |keys: Vec<i64>| df!("k" => keys, "v" => (0..1000i64).collect::<Vec<_>>()).unwrap();
    let join = |right: &Handle, how: &str| Step::Join {
        right: right.clone(),
        on: vec!["k".into()],
        left_on: vec![],
        right_on: vec![],
        how: how.into(),
        suffix: None,
    };
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
        assert!(matches!(err, Error::ResourceExhausted(_)), "{how}: {err:?}");
        // The pairs, plus at most every row of the side(s) an outer join keeps unmatched.
        assert!(err.to_string().contains(&format!("{how} join would produce 10")), "{how}: {err}");
    }
    // Repeated on one side only: 1,000 pairs.
    let out = run(repeated_left(), &[join(&unique, "inner")], &frames, &limits).unwrap();
    assert_eq!(out.height(), 1000);
    // Semi and anti joins never produce more rows than their left side.
    run(repeated_left(), &[join(&repeated, "semi")], &frames, &limits).unwrap();
    // A pipeline's earlier steps are counted through: the filter leaves one value on the left.
    let filtered = [Step::Filter { predicate: "k = 3".into() }, join(&repeated, "inner")];
    assert_eq!(run(repeated_left(), &filtered, &frames, &limits).unwrap().height(), 100 * 100);
}

#[test]
fn expanding_expressions_are_tried_on_one_row_first() {
    let df = df!("s" => vec!["ab"; 1000]).unwrap();
    let mut limits = limits();
    limits.max_result_bytes = 1 << 20;
    let padded = |width: u64| vec![step(serde_json::json!({"op": "with_columns", "columns": {"p": format!("lpad(s, {width}, 'x')")}}))];
    assert!(padded(10).iter().any(Step::expands));
    // 1,000 rows of 10 bytes fit; 1,000 rows of 10,000 bytes (10 MB) do not, and are refused
    // before they are made.
    assert_eq!(run(df.clone().into(), &padded(10), &HashMap::new(), &limits).unwrap().height(), 1000);
    let err = run(df.clone().into(), &padded(10_000), &HashMap::new(), &limits).unwrap_err();
    assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
    assert!(err.to_string().contains("POLARWAY_MAX_RESULT_BYTES"), "{err}");
    let plain = vec![step(serde_json::json!({"op": "filter", "predicate": "s = 'ab'"}))];
    assert!(!plain.iter().any(Step::expands));
}

#[test]
fn column_parameters_are_names_not_patterns() {
    // Polars' `col` reads `*` and `^...$` as patterns; a `*` resample index panicked inside it.
    let df = df!("a" => [1i64, 2]).unwrap();
    for index in ["*", "^a$"] {
        let steps = vec![step(serde_json::json!({"op": "resample", "index": index, "every": "1h", "aggs": ["sum(a)"]}))];
        let err = run(df.clone().into(), &steps, &HashMap::new(), &limits()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{index}: {err:?}");
    }
    let steps = vec![step(serde_json::json!({"op": "fill_null", "columns": ["*"], "value": 0}))];
    assert!(run(df.into(), &steps, &HashMap::new(), &limits()).is_err(), "no column is named `*`");
}

#[test]
fn unknown_parameter_values_name_the_parameter() {
    let df = df!("a" => [1i64]).unwrap();
    let steps = vec![step(serde_json::json!({"op": "unique", "keep": "sometimes"}))];
    let err = run(df.into(), &steps, &HashMap::new(), &limits()).unwrap_err();
    assert!(err.to_string().contains("`keep`"), "{err}");
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
