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
    limits.max_cross_join_rows = 10_000;
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
