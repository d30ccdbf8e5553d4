//! Group-by aggregations that DataFusion's hash aggregation answers as Polars does, run by it.
//!
//! On a large group_by most of Polars' time goes into inserting keys into its grouping table.
//! DataFusion's vectorised hash aggregation does the same work faster: over 10M rows and 1,000
//! keys the whole call takes two thirds of the time and half the CPU (`docs/BENCHMARKS.md`). A
//! `group_by` step runs there only when the answer is Polars' answer, column for column and type
//! for type:
//!
//! - keys are plain columns of an integer, boolean or string type (nulls form one group in both);
//! - each aggregation is one of
//!   - `sum` of an Int64, UInt64 or Float64 column. Both wrap integer overflow. A group without
//!     values sums to 0 in Polars; SQL text's `SUM` keeps SQL's NULL, as on the Polars path;
//!   - `mean` of an integer or Float64 column: both add the values as f64 and divide;
//!   - `count` (non-null values) and `len` of a column of a key type or Float64, as Polars'
//!     index type;
//!   - `min` and `max` of an integer column (floats are left to Polars: NaN orders differently);
//! - output names appear once, and the order of groups is not asked for (`maintain_order`).
//!
//! Anything else runs in Polars, as does an input below [`super::STREAMING_MIN_ROWS`] rows (setting
//! up a DataFusion session costs more than such a group_by) and one whose aggregation would pass
//! the SQL memory limit. Float sums may differ from Polars' in the last bits, as Polars' own do
//! between runs: both add in the order their morsels arrive.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType as ArrowType, SchemaRef as ArrowSchemaRef};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions_aggregate::expr_fn as df;
use datafusion::logical_expr::{Expr as DfExpr, cast, lit, when};
use polars::prelude::*;

use super::expr::Aggregations;
use crate::convert;
use crate::error::{Error, Result};

/// One aggregation that DataFusion answers as Polars does.
#[derive(Debug, Clone, PartialEq)]
enum Reduction {
    /// A sum, and the sum of a group without values: Polars' 0 of the column's type, or SQL's
    /// NULL (`None`).
    Sum { column: PlSmallStr, empty: Option<ScalarValue> },
    /// The mean, as Float64.
    Mean(PlSmallStr),
    /// Non-null values.
    Count(PlSmallStr),
    /// Rows.
    Len,
    /// The least value.
    Min(PlSmallStr),
    /// The greatest value.
    Max(PlSmallStr),
}

/// A group_by that DataFusion's hash aggregation answers as Polars does.
#[derive(Debug, Clone, PartialEq)]
pub struct HashAggregate {
    keys: Vec<PlSmallStr>,
    aggs: Vec<(Reduction, PlSmallStr)>,
}

fn is_key_type(dtype: &DataType) -> bool {
    dtype.is_integer() || matches!(dtype, DataType::Boolean | DataType::String)
}

/// The column `expr` names, if it is a plain column of `schema` whose type passes `ok`.
fn column<'a>(expr: &'a Expr, schema: &Schema, ok: impl Fn(&DataType) -> bool) -> Option<&'a PlSmallStr> {
    match expr {
        Expr::Column(name) if schema.get(name).is_some_and(ok) => Some(name),
        _ => None,
    }
}

/// One aggregation expression as a reduction and its output name, if DataFusion answers it as
/// Polars does.
fn reduction(expr: &Expr, schema: &Schema, sql_sums: &[PlSmallStr]) -> Option<(Reduction, PlSmallStr)> {
    let (inner, alias) = match expr {
        Expr::Alias(inner, name) => (inner.as_ref(), Some(name)),
        other => (other, None),
    };
    let named = |reduction: Reduction, column: &PlSmallStr| {
        let name = alias.unwrap_or(column).clone();
        Some((reduction, name))
    };
    let summable = |t: &DataType| matches!(t, DataType::Int64 | DataType::UInt64 | DataType::Float64);
    let averaged = |t: &DataType| t.is_integer() || *t == DataType::Float64;
    let counted = |t: &DataType| is_key_type(t) || *t == DataType::Float64;
    match inner {
        Expr::Len => Some((Reduction::Len, alias.cloned().unwrap_or_else(|| "len".into()))),
        Expr::Agg(agg) => match agg {
            AggExpr::Sum(e) => {
                let c = column(e, schema, summable)?;
                let empty = match schema.get(c)? {
                    _ if sql_sums.contains(alias.unwrap_or(c)) => None,
                    DataType::Int64 => Some(ScalarValue::Int64(Some(0))),
                    DataType::UInt64 => Some(ScalarValue::UInt64(Some(0))),
                    _ => Some(ScalarValue::Float64(Some(0.0))),
                };
                named(Reduction::Sum { column: c.clone(), empty }, c)
            }
            AggExpr::Mean(e) => column(e, schema, averaged).and_then(|c| named(Reduction::Mean(c.clone()), c)),
            AggExpr::Count { input, include_nulls: false } => {
                column(input, schema, counted).and_then(|c| named(Reduction::Count(c.clone()), c))
            }
            AggExpr::Count { input, include_nulls: true } => {
                column(input, schema, counted).and_then(|c| named(Reduction::Len, c))
            }
            AggExpr::Min { input, .. } => {
                column(input, schema, DataType::is_integer).and_then(|c| named(Reduction::Min(c.clone()), c))
            }
            AggExpr::Max { input, .. } => {
                column(input, schema, DataType::is_integer).and_then(|c| named(Reduction::Max(c.clone()), c))
            }
            _ => None,
        },
        _ => None,
    }
}

fn internal(e: DataFusionError) -> Error {
    Error::Internal(format!("hash aggregation: {e}"))
}

fn col(name: &str) -> DfExpr {
    DfExpr::Column(Column::from_name(name))
}

impl HashAggregate {
    /// The group_by of `keys` and `aggs` over a frame of `schema`, if DataFusion answers it as
    /// Polars does.
    pub fn of(keys: &[Expr], aggs: &Aggregations, schema: &Schema) -> Option<HashAggregate> {
        let keys = keys.iter().map(|k| column(k, schema, is_key_type).cloned()).collect::<Option<Vec<_>>>()?;
        let aggs = aggs
            .aggs
            .iter()
            .filter(|e| !matches!(e, Expr::Alias(_, name) if aggs.hidden.contains(name)))
            .map(|e| reduction(e, schema, &aggs.sql_sums))
            .collect::<Option<Vec<_>>>()?;
        let mut names = HashSet::new();
        let unique = keys.iter().chain(aggs.iter().map(|(_, name)| name)).all(|n| names.insert(n));
        (unique && !keys.is_empty()).then_some(HashAggregate { keys, aggs })
    }

    /// The aggregation of `frame`, or `None` if it would pass `memory_limit` bytes (Polars then
    /// runs it).
    pub fn run(&self, frame: &DataFrame, memory_limit: usize) -> Result<Option<DataFrame>> {
        let plan = self.plan(frame, memory_limit)?;
        let schema: ArrowSchemaRef = Arc::new(plan.schema().as_arrow().clone());
        // From the blocking pool, on the computation runtime: DataFusion spawns its partitions there.
        match crate::cpu::block_on(plan.collect()) {
            Ok(batches) => Ok(Some(convert::batches_to_frame(&schema, &batches)?)),
            Err(e) if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) => Ok(None),
            Err(e) => Err(internal(e)),
        }
    }

    /// The plan DataFusion runs over `frame`, for `explain`.
    pub fn describe(&self, frame: &DataFrame) -> Result<String> {
        let plan = self.plan(frame, usize::MAX)?;
        let optimized = plan.into_optimized_plan().map_err(internal)?;
        Ok(format!("DataFusion hash aggregation, as Polars answers it:\n{}", optimized.display_indent()))
    }

    /// The DataFusion plan over `frame`'s buffers, shared.
    fn plan(&self, frame: &DataFrame, memory_limit: usize) -> Result<datafusion::dataframe::DataFrame> {
        let (schema, batches) = convert::frame_to_batches(frame)?;
        let config = SessionConfig::new();
        // The batches dealt among the partitions DataFusion aggregates in parallel.
        let mut partitions = vec![Vec::new(); config.target_partitions().max(1)];
        let n = partitions.len();
        for (i, batch) in batches.into_iter().enumerate() {
            partitions[i % n].push(batch);
        }
        let table = MemTable::try_new(schema, partitions).map_err(internal)?;
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(memory_limit, 1.0).build_arc().map_err(internal)?;
        let session = SessionContext::new_with_config_rt(config, runtime);
        let (group, aggregates, projection) = self.exprs();
        session
            .read_table(Arc::new(table))
            .and_then(|t| t.aggregate(group, aggregates))
            .and_then(|t| t.select(projection))
            .map_err(internal)
    }

    /// The grouping keys, the aggregations, and the projection that gives Polars' types.
    fn exprs(&self) -> (Vec<DfExpr>, Vec<DfExpr>, Vec<DfExpr>) {
        let index = match IDX_DTYPE {
            DataType::UInt32 => ArrowType::UInt32,
            _ => ArrowType::UInt64,
        };
        let group: Vec<DfExpr> = self.keys.iter().map(|k| col(k)).collect();
        let mut aggregates = Vec::with_capacity(self.aggs.len());
        let mut projection = group.clone();
        for (reduction, name) in &self.aggs {
            let aggregate = match reduction {
                Reduction::Sum { column, .. } => df::sum(col(column)),
                Reduction::Mean(column) => df::avg(col(column)),
                Reduction::Count(column) => df::count(col(column)),
                // `count(*)`: a literal is never null.
                Reduction::Len => df::count(lit(1i64)),
                Reduction::Min(column) => df::min(col(column)),
                Reduction::Max(column) => df::max(col(column)),
            };
            aggregates.push(aggregate.alias(name.as_str()));
            let value = match reduction {
                Reduction::Count(_) | Reduction::Len => cast(col(name), index.clone()),
                Reduction::Sum { empty: Some(zero), .. } => when(col(name).is_null(), lit(zero.clone()))
                    .otherwise(col(name))
                    .expect("a CASE with one branch and an ELSE"),
                _ => col(name),
            };
            projection.push(value.alias(name.as_str()));
        }
        (group, aggregates, projection)
    }
}

#[cfg(test)]
mod tests {

    use serde_json::{Value, json};

    use super::*;
    use crate::config::{Config, StoreConfig};
    use crate::ops::{self, Step};

    const ROWS: i64 = 300_000;

    /// Keys with nulls, a key whose values are all null, floats that add exactly in any order.
    fn frame() -> DataFrame {
        let k: Vec<Option<i64>> = (0..ROWS).map(|i| (i % 101 != 0).then_some(i % 1000)).collect();
        let s: Vec<Option<String>> = (0..ROWS).map(|i| (i % 13 != 0).then(|| format!("s{}", i % 7))).collect();
        let v: Vec<Option<f64>> =
            (0..ROWS).map(|i| (i % 17 != 0 && i % 1000 != 999).then_some((i % 97) as f64 * 0.5)).collect();
        let w: Vec<Option<i64>> = (0..ROWS).map(|i| (i % 11 != 0).then_some(i % 89 - 40)).collect();
        let u: Vec<u32> = (0..ROWS).map(|i| (i % 5) as u32).collect();
        df!("k" => k, "s" => s, "v" => v, "w" => w, "u" => u).unwrap()
    }

    fn group_by(by: Value, aggs: Value) -> Step {
        serde_json::from_value(json!({"op": "group_by", "by": by, "aggs": aggs})).unwrap()
    }

    fn native(expr: Value) -> Value {
        json!({"expr": expr})
    }

    fn agg(kind: &str, column: &str, alias: &str) -> Value {
        native(json!({"Alias": [{"Agg": {kind: {"Column": column}}}, alias]}))
    }

    fn limits() -> crate::limits::Limits {
        Config::with_store(StoreConfig::Memory).limits
    }

    fn planned(df: &DataFrame, step: &Step) -> Option<HashAggregate> {
        step.0.hash_aggregate(df.schema()).unwrap()
    }

    /// Polars' own answer, on the engine the step would run on without DataFusion.
    fn by_polars(df: &DataFrame, step: &Step) -> DataFrame {
        let plan =
            ops::build(df.clone().into(), std::slice::from_ref(step), &ops::Leaves::default(), &limits()).unwrap();
        plan.collect_with_engine(Engine::Streaming).unwrap().unwrap_single()
    }

    fn assert_same(got: &DataFrame, want: &DataFrame, keys: &[&str]) {
        assert_eq!(got.schema(), want.schema(), "{got}\n{want}");
        let order = SortMultipleOptions::default().with_nulls_last(true);
        let got = got.sort(keys.to_vec(), order.clone()).unwrap();
        let want = want.sort(keys.to_vec(), order).unwrap();
        assert!(got.equals_missing(&want), "{got}\n{want}");
    }

    #[test]
    fn a_routed_group_by_answers_as_polars_does() {
        let df = frame();
        let aggs = json!([
            agg("Sum", "v", "total"),
            agg("Mean", "v", "mean"),
            native(json!({"Alias": [{"Agg": {"Count": {"input": {"Column": "v"}, "include_nulls": false}}}, "n"]})),
            native(json!({"Alias": [{"Agg": {"Count": {"input": {"Column": "s"}, "include_nulls": true}}}, "rows"]})),
            native(json!({"Alias": ["Len", "len"]})),
            agg("Sum", "w", "w_total"),
            agg("Mean", "w", "w_mean"),
            agg("Mean", "u", "u_mean"),
            native(json!({"Alias": [{"Agg": {"Min": {"input": {"Column": "w"}, "propagate_nans": false}}}, "lo"]})),
            native(json!({"Alias": [{"Agg": {"Max": {"input": {"Column": "w"}, "propagate_nans": false}}}, "hi"]})),
            "sum(v) AS sql_total",
            "count(*) AS all_rows",
            "avg(w) AS w_avg",
        ]);
        for keys in [vec!["k"], vec!["s", "k"], vec!["s"]] {
            let step = group_by(json!(keys), aggs.clone());
            let plan = planned(&df, &step).expect("DataFusion answers it");
            let got = plan.run(&df, 1 << 30).unwrap().expect("within the memory limit");
            assert_same(&got, &by_polars(&df, &step), &keys);
            // Through the pipeline, which takes this route for an input this large.
            let piped = ops::run_over(df.clone().into(), &[step], &ops::Leaves::default(), &limits(), true).unwrap();
            assert_same(&piped, &got, &keys);
        }
        // A group whose values are all null: Polars' sum is 0, SQL's SUM is NULL.
        let step = group_by(json!(["k"]), aggs);
        let got = planned(&df, &step).unwrap().run(&df, 1 << 30).unwrap().unwrap();
        let empty = got.lazy().filter(polars::prelude::col("k").eq(polars::prelude::lit(999))).collect().unwrap();
        assert_eq!(empty.column("total").unwrap().f64().unwrap().get(0), Some(0.0), "{empty}");
        assert_eq!(empty.column("sql_total").unwrap().f64().unwrap().get(0), None, "{empty}");
        assert_eq!(empty.column("mean").unwrap().f64().unwrap().get(0), None, "{empty}");
    }

    #[test]
    fn what_datafusion_would_answer_otherwise_stays_with_polars() {
        let df = frame();
        let doubled = native(
            json!({"Alias": [{"Agg": {"Sum": {"BinaryExpr": {"left": {"Column": "w"}, "op": "Multiply", "right": {"Column": "w"}}}}}, "sq"]}),
        );
        let float_min =
            native(json!({"Alias": [{"Agg": {"Min": {"input": {"Column": "v"}, "propagate_nans": false}}}, "lo"]}));
        let refused = [
            // Float keys, float extremes, 32-bit sums, expressions inside an aggregation.
            group_by(json!(["v"]), json!([agg("Sum", "w", "t")])),
            group_by(json!(["k"]), json!([float_min])),
            group_by(json!(["k"]), json!([agg("Sum", "u", "t")])),
            group_by(json!(["k"]), json!([doubled])),
            group_by(json!(["k"]), json!(["first(w) AS f"])),
            // Two outputs named `v`.
            group_by(
                json!(["k"]),
                json!([
                    native(json!({"Agg": {"Sum": {"Column": "v"}}})),
                    native(json!({"Agg": {"Mean": {"Column": "v"}}}))
                ]),
            ),
            // An unknown column, which Polars reports.
            group_by(json!(["nope"]), json!([agg("Sum", "w", "t")])),
        ];
        for step in &refused {
            assert_eq!(planned(&df, step), None, "{step:?}");
        }
        let ordered: Step = serde_json::from_value(
            json!({"op": "group_by", "by": ["k"], "aggs": ["sum(w) AS t"], "maintain_order": true}),
        )
        .unwrap();
        assert_eq!(planned(&df, &ordered), None);
        // The unknown column is still Polars' error.
        let err = ops::run_over(df.into(), &refused[6..], &ops::Leaves::default(), &limits(), true).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_) | Error::NotFound(_)), "{err:?}");
    }

    #[test]
    fn explain_names_the_engine_that_runs_the_step() {
        let df = frame();
        let routed = group_by(json!(["k"]), json!([agg("Sum", "v", "total")]));
        let plan =
            ops::explain_over(df.clone().into(), std::slice::from_ref(&routed), &ops::Leaves::default(), &limits())
                .unwrap();
        assert!(plan.starts_with("DataFusion hash aggregation") && plan.contains("sum"), "{plan}");
        // Below the size where DataFusion pays, and for what it would answer otherwise: Polars.
        let small =
            ops::explain_over(df.head(Some(1000)).into(), &[routed], &ops::Leaves::default(), &limits()).unwrap();
        let refused = group_by(json!(["v"]), json!([agg("Sum", "w", "t")]));
        let other = ops::explain_over(df.into(), &[refused], &ops::Leaves::default(), &limits()).unwrap();
        for plan in [small, other] {
            assert!(!plan.contains("DataFusion") && plan.contains("AGGREGATE"), "{plan}");
        }
    }

    #[test]
    fn an_empty_frame_gives_polars_empty_answer() {
        let df = frame().head(Some(0));
        let step = group_by(json!(["s"]), json!([agg("Sum", "w", "t"), "count(*) AS n", agg("Mean", "v", "m")]));
        let got = planned(&df, &step).unwrap().run(&df, 1 << 30).unwrap().unwrap();
        assert_eq!(got.height(), 0);
        assert_same(&got, &by_polars(&df, &step), &["s"]);
    }

    #[test]
    fn an_aggregation_past_the_memory_limit_is_left_to_polars() {
        let df = df!("k" => (0..ROWS).collect::<Vec<_>>(), "w" => (0..ROWS).collect::<Vec<_>>()).unwrap();
        let step = group_by(json!(["k"]), json!([agg("Sum", "w", "t")]));
        assert!(planned(&df, &step).unwrap().run(&df, 64 << 10).unwrap().is_none());
        let mut limits = limits();
        limits.max_sql_memory_bytes = 64 << 10;
        let out = ops::run_over(df.into(), &[step], &ops::Leaves::default(), &limits, true).unwrap();
        assert_eq!(out.height(), ROWS as usize);
    }
}
