//! Polars operations: their typed JSON specs and how each becomes part of a lazy plan.
//!
//! Every data operation is a [`Step`]: a transform of one frame, possibly reading other handles
//! (the right side of a join, the other parts of a concat). A single DoAction is a one-step
//! [`Pipeline`]; the `pipeline` action chains many into one lazy Polars plan. Nothing here does
//! I/O or knows tokio: inputs arrive as frames, the result leaves as a frame.

mod describe;
pub mod expr;
pub mod io;

use std::collections::HashMap;

use indexmap::IndexMap;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::limits::Limits;

/// Sort order per column: one flag for all, or one per column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Flags {
    /// The same for every column.
    One(bool),
    /// One per column.
    Many(Vec<bool>),
}

impl Default for Flags {
    fn default() -> Self {
        Flags::One(false)
    }
}

impl Flags {
    fn expand(&self, n: usize) -> Result<Vec<bool>> {
        match self {
            Flags::One(b) => Ok(vec![*b; n]),
            Flags::Many(v) if v.len() == n => Ok(v.clone()),
            Flags::Many(v) => Err(Error::invalid(format!(
                "`descending`: {} flags for {n} sort columns",
                v.len()
            ))),
        }
    }
}

/// A frame transform: one operation, as a DoAction (with `input`) or a pipeline step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Keep rows where a SQL predicate holds.
    Filter { predicate: String },
    /// Project SQL expressions.
    Select { columns: Vec<String> },
    /// Add or replace columns: name -> SQL expression.
    WithColumns { columns: IndexMap<String, String> },
    /// Sort by columns.
    Sort {
        by: Vec<String>,
        #[serde(default)]
        descending: Flags,
        #[serde(default)]
        nulls_last: bool,
        #[serde(default)]
        maintain_order: bool,
    },
    /// Group by keys and aggregate with SQL aggregate expressions.
    GroupBy {
        by: Vec<String>,
        aggs: Vec<String>,
        #[serde(default)]
        maintain_order: bool,
    },
    /// Join with another handle.
    Join {
        right: Handle,
        #[serde(default)]
        on: Vec<String>,
        #[serde(default)]
        left_on: Vec<String>,
        #[serde(default)]
        right_on: Vec<String>,
        #[serde(default = "default_how")]
        how: String,
        #[serde(default)]
        suffix: Option<String>,
    },
    /// As-of join with another handle on a sorted key.
    AsofJoin {
        right: Handle,
        #[serde(default)]
        on: Option<String>,
        #[serde(default)]
        left_on: Option<String>,
        #[serde(default)]
        right_on: Option<String>,
        #[serde(default)]
        by: Vec<String>,
        #[serde(default = "default_strategy")]
        strategy: String,
        #[serde(default)]
        tolerance: Option<serde_json::Value>,
        #[serde(default)]
        suffix: Option<String>,
        #[serde(default = "yes")]
        allow_exact_matches: bool,
    },
    /// Append other handles: vertical, vertical_relaxed, horizontal, diagonal, diagonal_relaxed.
    Concat {
        inputs: Vec<Handle>,
        #[serde(default = "default_concat")]
        how: String,
    },
    /// First n rows.
    Head { n: u64 },
    /// Last n rows.
    Tail { n: u64 },
    /// First n rows (alias of head).
    Limit { n: u64 },
    /// Rows offset..offset+length (negative offset counts from the end).
    Slice { offset: i64, length: u64 },
    /// Remove columns.
    Drop { columns: Vec<String> },
    /// Rename columns: old -> new.
    Rename {
        mapping: IndexMap<String, String>,
        #[serde(default = "yes")]
        strict: bool,
    },
    /// Cast columns: name -> type.
    Cast {
        dtypes: IndexMap<String, String>,
        #[serde(default = "yes")]
        strict: bool,
    },
    /// Drop duplicate rows.
    Unique {
        #[serde(default)]
        subset: Option<Vec<String>>,
        #[serde(default = "default_keep")]
        keep: String,
        #[serde(default = "yes")]
        maintain_order: bool,
    },
    /// Drop rows with nulls (in `subset`, or any column).
    DropNulls {
        #[serde(default)]
        subset: Option<Vec<String>>,
    },
    /// Replace nulls with a value or by a strategy.
    FillNull {
        #[serde(default)]
        value: Option<serde_json::Value>,
        #[serde(default)]
        strategy: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default)]
        columns: Option<Vec<String>>,
    },
    /// Replace NaN with a value.
    FillNan { value: serde_json::Value },
    /// Fill nulls by interpolation (linear or nearest) in numeric columns.
    Interpolate {
        #[serde(default = "default_interpolation")]
        method: String,
        #[serde(default)]
        columns: Option<Vec<String>>,
    },
    /// Long to wide.
    Pivot {
        on: Vec<String>,
        #[serde(default)]
        index: Vec<String>,
        #[serde(default)]
        values: Vec<String>,
        #[serde(default = "default_pivot_agg")]
        agg: String,
        #[serde(default = "default_separator")]
        separator: String,
    },
    /// Wide to long.
    Unpivot {
        #[serde(default)]
        index: Vec<String>,
        #[serde(default)]
        on: Option<Vec<String>>,
        #[serde(default)]
        variable_name: Option<String>,
        #[serde(default)]
        value_name: Option<String>,
    },
    /// Summary statistics per column.
    Describe {
        #[serde(default = "default_percentiles")]
        percentiles: Vec<f64>,
    },
    /// Time buckets on a datetime (or integer) column: group_by_dynamic.
    Resample {
        index: String,
        every: String,
        #[serde(default)]
        period: Option<String>,
        #[serde(default)]
        offset: Option<String>,
        #[serde(default = "default_closed_left")]
        closed: String,
        #[serde(default = "default_label")]
        label: String,
        #[serde(default)]
        by: Vec<String>,
        aggs: Vec<String>,
    },
    /// Rolling aggregates over `window_size` rows, or over a duration `window` of column `by`.
    Rolling {
        columns: Vec<String>,
        #[serde(default = "default_rolling_agg")]
        agg: String,
        #[serde(default)]
        window_size: Option<usize>,
        #[serde(default)]
        window: Option<String>,
        #[serde(default)]
        by: Option<String>,
        #[serde(default)]
        min_periods: Option<usize>,
        #[serde(default = "default_closed_right")]
        closed: String,
    },
    /// Lag (n > 0) or lead (n < 0).
    Shift {
        #[serde(default = "one")]
        n: i64,
        #[serde(default)]
        columns: Option<Vec<String>>,
        #[serde(default)]
        suffix: Option<String>,
    },
    /// Difference with the value n rows earlier.
    Diff {
        #[serde(default = "one")]
        n: i64,
        #[serde(default)]
        columns: Option<Vec<String>>,
        #[serde(default)]
        suffix: Option<String>,
    },
    /// Fractional change from the value n rows earlier.
    PctChange {
        #[serde(default = "one")]
        n: i64,
        #[serde(default)]
        columns: Option<Vec<String>>,
        #[serde(default)]
        suffix: Option<String>,
    },
    /// Cumulative sum.
    CumSum {
        #[serde(default)]
        columns: Option<Vec<String>>,
        #[serde(default)]
        reverse: bool,
        #[serde(default)]
        suffix: Option<String>,
    },
    /// Cumulative sum, product, min, max or count.
    Cumulative {
        kind: String,
        #[serde(default)]
        columns: Option<Vec<String>>,
        #[serde(default)]
        reverse: bool,
        #[serde(default)]
        suffix: Option<String>,
    },
    /// Random rows: `n` or `fraction`; without `seed` the result is new on every call.
    Sample {
        #[serde(default)]
        n: Option<u64>,
        #[serde(default)]
        fraction: Option<f64>,
        #[serde(default)]
        with_replacement: bool,
        #[serde(default)]
        shuffle: bool,
        #[serde(default)]
        seed: Option<u64>,
    },
}

fn default_how() -> String {
    "inner".into()
}
fn default_strategy() -> String {
    "backward".into()
}
fn default_concat() -> String {
    "vertical".into()
}
fn default_keep() -> String {
    "any".into()
}
fn default_interpolation() -> String {
    "linear".into()
}
fn default_pivot_agg() -> String {
    "first".into()
}
fn default_separator() -> String {
    "_".into()
}
fn default_percentiles() -> Vec<f64> {
    vec![0.25, 0.5, 0.75]
}
fn default_closed_left() -> String {
    "left".into()
}
fn default_closed_right() -> String {
    "right".into()
}
fn default_label() -> String {
    "left".into()
}
fn default_rolling_agg() -> String {
    "mean".into()
}
fn yes() -> bool {
    true
}
fn one() -> i64 {
    1
}

impl Step {
    /// The operation name, as used for DoAction types and pipeline `op` fields.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Filter { .. } => "filter",
            Step::Select { .. } => "select",
            Step::WithColumns { .. } => "with_columns",
            Step::Sort { .. } => "sort",
            Step::GroupBy { .. } => "group_by",
            Step::Join { .. } => "join",
            Step::AsofJoin { .. } => "asof_join",
            Step::Concat { .. } => "concat",
            Step::Head { .. } => "head",
            Step::Tail { .. } => "tail",
            Step::Limit { .. } => "limit",
            Step::Slice { .. } => "slice",
            Step::Drop { .. } => "drop",
            Step::Rename { .. } => "rename",
            Step::Cast { .. } => "cast",
            Step::Unique { .. } => "unique",
            Step::DropNulls { .. } => "drop_nulls",
            Step::FillNull { .. } => "fill_null",
            Step::FillNan { .. } => "fill_nan",
            Step::Interpolate { .. } => "interpolate",
            Step::Pivot { .. } => "pivot",
            Step::Unpivot { .. } => "unpivot",
            Step::Describe { .. } => "describe",
            Step::Resample { .. } => "resample",
            Step::Rolling { .. } => "rolling",
            Step::Shift { .. } => "shift",
            Step::Diff { .. } => "diff",
            Step::PctChange { .. } => "pct_change",
            Step::CumSum { .. } => "cum_sum",
            Step::Cumulative { .. } => "cumulative",
            Step::Sample { .. } => "sample",
        }
    }

    /// Other handles this step reads.
    pub fn referenced_handles(&self) -> Vec<Handle> {
        match self {
            Step::Join { right, .. } | Step::AsofJoin { right, .. } => vec![right.clone()],
            Step::Concat { inputs, .. } => inputs.clone(),
            _ => vec![],
        }
    }

    /// Whether any text in this step calls a function that can make values much larger than its
    /// arguments, or holds a long string literal ([`crate::sqltext::expands`]).
    pub fn expands(&self) -> bool {
        fn any_text(value: &serde_json::Value) -> bool {
            match value {
                serde_json::Value::String(s) => crate::sqltext::expands(s),
                serde_json::Value::Array(items) => items.iter().any(any_text),
                serde_json::Value::Object(fields) => fields.values().any(any_text),
                _ => false,
            }
        }
        serde_json::to_value(self).is_ok_and(|v| any_text(&v))
    }

    /// Whether the same inputs always give the same result. `sample` without a seed does not.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, Step::Sample { seed: None, .. })
    }
}

/// A chain of steps over one input, run as one lazy plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// The input handle.
    pub input: Handle,
    /// The steps, applied in order.
    pub steps: Vec<Step>,
}

impl Pipeline {
    /// Every handle the pipeline reads, input first, without repeats.
    pub fn handles(&self) -> Vec<Handle> {
        let mut all = vec![self.input.clone()];
        for h in self.steps.iter().flat_map(Step::referenced_handles) {
            if !all.contains(&h) {
                all.push(h);
            }
        }
        all
    }
}

/// An input of an operation: a lazy plan (an in-memory frame, or a scan of a stored file) and
/// its row count.
#[derive(Clone)]
pub struct Input {
    /// The input as a lazy frame.
    pub lf: LazyFrame,
    /// Its rows, known from the result's metadata without reading it.
    pub rows: u64,
}

impl From<DataFrame> for Input {
    fn from(df: DataFrame) -> Input {
        Input { rows: df.height() as u64, lf: df.lazy() }
    }
}

impl Step {
    /// Whether the step is one the streaming engine runs (see [`run`]).
    fn streams(&self) -> bool {
        matches!(
            self,
            Step::Filter { .. }
                | Step::Select { .. }
                | Step::WithColumns { .. }
                | Step::Sort { .. }
                | Step::GroupBy { .. }
                | Step::Join { .. }
                | Step::Head { .. }
                | Step::Tail { .. }
                | Step::Limit { .. }
                | Step::Slice { .. }
                | Step::Drop { .. }
                | Step::Rename { .. }
        )
    }
}

/// Inputs smaller than this run on the in-memory engine (see [`run`]).
const STREAMING_MIN_ROWS: u64 = 100_000;

/// Runs steps over `input`, reading referenced handles from `frames`, and collects the result.
pub fn run(
    input: Input,
    steps: &[Step],
    frames: &HashMap<Handle, Input>,
    limits: &Limits,
) -> Result<DataFrame> {
    let rows = frames.values().map(|f| f.rows).fold(input.rows, u64::max);
    if steps.iter().any(Step::expands) {
        probe(&input, steps, frames, limits, rows)?;
    }
    let plan = build(input, steps, frames, limits)?;
    // The streaming engine runs a plan in morsels over all cores without materialising each
    // intermediate column: about 4x faster than the in-memory engine on a 10-step pipeline over
    // 10M rows. It is used for the relational steps only: where Polars 0.55 itself panics (some
    // resample and unpivot inputs), the in-memory engine turns the panic into an error while
    // the streaming engine can stall. Small inputs skip it: setting up its pipeline costs more
    // than a filter over a few thousand rows.
    let streams = rows >= STREAMING_MIN_ROWS && steps.iter().all(Step::streams);
    let engine = if streams { Engine::Streaming } else { Engine::InMemory };
    Ok(plan.collect_with_engine(engine)?.unwrap_single())
}

/// Runs `steps` over the input's first row and refuses them if, at that size per row, a result
/// of `rows` rows would pass the byte limit (see [`crate::sqltext::expands`]). A first row the
/// steps filter out tells nothing, and the steps then run unprobed.
fn probe(input: &Input, steps: &[Step], frames: &HashMap<Handle, Input>, limits: &Limits, rows: u64) -> Result<()> {
    let first = Input { lf: input.lf.clone().slice(0, 1), rows: input.rows.min(1) };
    let out = build(first, steps, frames, limits)?.collect()?;
    if out.height() > 0 {
        let per_row = out.estimated_size() as u64 / out.height() as u64;
        limits.check_bytes(per_row.saturating_mul(rows.max(1)), true)?;
    }
    Ok(())
}

/// Builds the lazy plan of `steps` over `input` (eager where Polars needs data to plan, as pivot).
pub fn build(
    input: Input,
    steps: &[Step],
    frames: &HashMap<Handle, Input>,
    limits: &Limits,
) -> Result<LazyFrame> {
    // An upper bound on the rows flowing through, to refuse joins before they run.
    let mut rows_bound = input.rows;
    let mut lf = input.lf;
    for step in steps {
        let frame = |h: &Handle| -> Result<&Input> {
            frames.get(h).ok_or_else(|| Error::NotFound(format!("handle {h} not found")))
        };
        rows_bound = match step {
            Step::Join { right, how, on, left_on, right_on, .. } => {
                let right = frame(right)?;
                let product = rows_bound.saturating_mul(right.rows.max(1));
                match how.as_str() {
                    "cross" => {
                        limits.check_cross_join(rows_bound, right.rows)?;
                        product
                    }
                    "semi" | "anti" => rows_bound,
                    // Past the limit only if keys repeat on both sides: count the pairs.
                    _ if product > limits.max_join_rows => {
                        let (l, r) = join_keys(on, left_on, right_on, false)?;
                        let pairs = matched_pairs(&lf, l, &right.lf, r)?;
                        let unmatched = match how.as_str() {
                            "left" => rows_bound,
                            "right" => right.rows,
                            "full" | "outer" => rows_bound.saturating_add(right.rows),
                            _ => 0,
                        };
                        let rows = pairs.saturating_add(unmatched);
                        limits.check_join(how, rows)?;
                        rows
                    }
                    _ => product,
                }
            }
            Step::Concat { inputs, .. } => inputs.iter().try_fold(rows_bound, |acc, h| {
                Ok::<_, Error>(acc.saturating_add(frame(h)?.rows))
            })?,
            _ => rows_bound,
        };
        lf = apply(lf, step, &frame)?;
    }
    Ok(lf)
}

fn columns_or_all(lf: &mut LazyFrame, columns: &Option<Vec<String>>) -> Result<Vec<String>> {
    match columns {
        Some(c) => Ok(c.clone()),
        None => Ok(lf.collect_schema()?.iter_names().map(|n| n.to_string()).collect()),
    }
}

/// Applies `f` to each chosen column, in place or as new `<name><suffix>` columns.
fn per_column(
    mut lf: LazyFrame,
    columns: &Option<Vec<String>>,
    suffix: &Option<String>,
    f: impl Fn(Expr) -> Expr,
) -> Result<LazyFrame> {
    let names = columns_or_all(&mut lf, columns)?;
    let exprs: Vec<Expr> = names
        .iter()
        .map(|n| {
            let out = match suffix {
                Some(s) => format!("{n}{s}"),
                None => n.clone(),
            };
            f(expr::column(n)).alias(out.as_str())
        })
        .collect();
    Ok(lf.with_columns(exprs))
}

fn apply<'a>(
    lf: LazyFrame,
    step: &Step,
    frame: &impl Fn(&Handle) -> Result<&'a Input>,
) -> Result<LazyFrame> {
    Ok(match step {
        Step::Filter { predicate } => lf.filter(expr::parse("predicate", predicate)?),
        Step::Select { columns } => lf.select(expr::parse_all("columns", columns)?),
        Step::WithColumns { columns } => {
            let exprs = columns
                .iter()
                .map(|(name, e)| Ok(expr::parse("columns", e)?.alias(name.as_str())))
                .collect::<Result<Vec<_>>>()?;
            lf.with_columns(exprs)
        }
        Step::Sort { by, descending, nulls_last, maintain_order } => {
            let options = SortMultipleOptions::default()
                .with_order_descending_multi(descending.expand(by.len())?)
                .with_nulls_last(*nulls_last)
                .with_maintain_order(*maintain_order);
            lf.sort(by.iter().map(String::as_str).collect::<Vec<_>>(), options)
        }
        Step::GroupBy { by, aggs, maintain_order } => {
            let keys = expr::parse_all("by", by)?;
            let parsed = expr::parse_aggs("aggs", aggs)?;
            let grouped = if *maintain_order {
                lf.group_by_stable(keys).agg(parsed.aggs)
            } else {
                lf.group_by(keys).agg(parsed.aggs)
            };
            if parsed.hidden.is_empty() {
                grouped
            } else {
                grouped.with_columns(parsed.after).drop(cols(parsed.hidden))
            }
        }
        Step::Join { right, on, left_on, right_on, how, suffix } => {
            let how_type = match how.as_str() {
                "inner" => JoinType::Inner,
                "left" => JoinType::Left,
                "right" => JoinType::Right,
                "full" | "outer" => JoinType::Full,
                "semi" => JoinType::Semi,
                "anti" => JoinType::Anti,
                "cross" => JoinType::Cross,
                other => {
                    return Err(Error::invalid(format!(
                        "`how`: unknown join type `{other}` (inner, left, right, full, semi, anti, cross)"
                    )));
                }
            };
            let (l, r) = join_keys(on, left_on, right_on, how_type == JoinType::Cross)?;
            let mut args = JoinArgs::new(how_type);
            if let Some(s) = suffix {
                args = args.with_suffix(Some(s.as_str().into()));
            }
            lf.join(frame(right)?.lf.clone(), l, r, args)
        }
        Step::AsofJoin {
            right,
            on,
            left_on,
            right_on,
            by,
            strategy,
            tolerance,
            suffix,
            allow_exact_matches,
        } => {
            let (l, r) = match (on, left_on, right_on) {
                (Some(on), None, None) => (on.clone(), on.clone()),
                (None, Some(l), Some(r)) => (l.clone(), r.clone()),
                _ => return Err(Error::invalid("`on`: give `on`, or both `left_on` and `right_on`")),
            };
            let strategy = match strategy.as_str() {
                "backward" => AsofStrategy::Backward,
                "forward" => AsofStrategy::Forward,
                "nearest" => AsofStrategy::Nearest,
                other => {
                    return Err(Error::invalid(format!(
                        "`strategy`: unknown `{other}` (backward, forward, nearest)"
                    )));
                }
            };
            let (tolerance, tolerance_str) = match tolerance {
                None | Some(serde_json::Value::Null) => (None, None),
                Some(serde_json::Value::String(s)) => {
                    expr::duration("tolerance", s)?;
                    (None, Some(s.as_str().into()))
                }
                Some(serde_json::Value::Number(n)) => {
                    let scalar = match (n.as_i64(), n.as_f64()) {
                        (Some(i), _) => Scalar::from(i),
                        (None, Some(f)) => Scalar::from(f),
                        _ => return Err(Error::invalid("`tolerance`: not a number")),
                    };
                    (Some(scalar), None)
                }
                Some(_) => return Err(Error::invalid("`tolerance`: a number or a duration string")),
            };
            let by_names: Option<Vec<PlSmallStr>> =
                (!by.is_empty()).then(|| by.iter().map(|b| b.as_str().into()).collect());
            let options = AsOfOptions {
                strategy,
                tolerance,
                tolerance_str,
                left_by: by_names.clone(),
                right_by: by_names,
                allow_eq: *allow_exact_matches,
                check_sortedness: true,
            };
            let mut args = JoinArgs::new(JoinType::AsOf(Box::new(options)));
            if let Some(s) = suffix {
                args = args.with_suffix(Some(s.as_str().into()));
            }
            lf.join(frame(right)?.lf.clone(), [expr::column(&l)], [expr::column(&r)], args)
        }
        Step::Concat { inputs, how } => {
            let mut parts = vec![lf];
            for h in inputs {
                parts.push(frame(h)?.lf.clone());
            }
            let relaxed = UnionArgs { to_supertypes: true, ..Default::default() };
            match how.as_str() {
                "vertical" => concat(parts, UnionArgs::default())?,
                "vertical_relaxed" => concat(parts, relaxed)?,
                "diagonal" => concat_lf_diagonal(parts, UnionArgs::default())?,
                "diagonal_relaxed" => concat_lf_diagonal(parts, relaxed)?,
                "horizontal" => concat_lf_horizontal(parts, HConcatOptions::default())?,
                other => {
                    return Err(Error::invalid(format!(
                        "`how`: unknown concat `{other}` (vertical, vertical_relaxed, horizontal, diagonal, diagonal_relaxed)"
                    )));
                }
            }
        }
        Step::Head { n } | Step::Limit { n } => lf.limit(idx("n", *n)?),
        Step::Tail { n } => lf.tail(idx("n", *n)?),
        Step::Slice { offset, length } => lf.slice(*offset, idx("length", *length)?),
        Step::Drop { columns } => lf.drop(expr::selector(columns)),
        Step::Rename { mapping, strict } => lf.rename(mapping.keys(), mapping.values(), *strict),
        Step::Cast { dtypes, strict } => {
            let exprs = dtypes
                .iter()
                .map(|(name, t)| {
                    let dt = expr::dtype("dtypes", t)?;
                    let c = expr::column(name);
                    Ok(if *strict { c.strict_cast(dt) } else { c.cast(dt) })
                })
                .collect::<Result<Vec<_>>>()?;
            lf.with_columns(exprs)
        }
        Step::Unique { subset, keep, maintain_order } => {
            let keep = match keep.as_str() {
                "first" => UniqueKeepStrategy::First,
                "last" => UniqueKeepStrategy::Last,
                "any" => UniqueKeepStrategy::Any,
                "none" => UniqueKeepStrategy::None,
                other => {
                    return Err(Error::invalid(format!(
                        "`keep`: unknown `{other}` (first, last, any, none)"
                    )));
                }
            };
            let subset = subset.as_deref().map(expr::selector);
            if *maintain_order { lf.unique_stable(subset, keep) } else { lf.unique(subset, keep) }
        }
        Step::DropNulls { subset } => lf.drop_nulls(subset.as_deref().map(expr::selector)),
        Step::FillNull { value, strategy, limit, columns } => {
            let fill: Box<dyn Fn(Expr) -> Result<Expr>> = match (value, strategy) {
                (Some(v), None) => {
                    let v = expr::scalar("value", v)?;
                    Box::new(move |e: Expr| Ok(e.fill_null(v.clone())))
                }
                (None, Some(s)) => {
                    let strategy = match s.as_str() {
                        "forward" => FillNullStrategy::Forward(*limit),
                        "backward" => FillNullStrategy::Backward(*limit),
                        "mean" => FillNullStrategy::Mean,
                        "min" => FillNullStrategy::Min,
                        "max" => FillNullStrategy::Max,
                        "zero" => FillNullStrategy::Zero,
                        "one" => FillNullStrategy::One,
                        other => {
                            return Err(Error::invalid(format!(
                                "`strategy`: unknown `{other}` (forward, backward, mean, min, max, zero, one)"
                            )));
                        }
                    };
                    Box::new(move |e: Expr| Ok(e.fill_null_with_strategy(strategy)))
                }
                _ => return Err(Error::invalid("`value`: give exactly one of `value` or `strategy`")),
            };
            let mut lf = lf;
            let names = columns_or_all(&mut lf, columns)?;
            let exprs = names
                .iter()
                .map(|n| fill(expr::column(n)))
                .collect::<Result<Vec<_>>>()?;
            lf.with_columns(exprs)
        }
        Step::FillNan { value } => lf.fill_nan(expr::scalar("value", value)?),
        Step::Interpolate { method, columns } => {
            let method = match method.as_str() {
                "linear" => InterpolationMethod::Linear,
                "nearest" => InterpolationMethod::Nearest,
                other => {
                    return Err(Error::invalid(format!(
                        "`method`: unknown `{other}` (linear, nearest)"
                    )));
                }
            };
            let mut lf = lf;
            let names = match columns {
                Some(c) => c.clone(),
                None => lf
                    .collect_schema()?
                    .iter()
                    .filter(|(_, dt)| dt.is_primitive_numeric())
                    .map(|(n, _)| n.to_string())
                    .collect(),
            };
            let exprs: Vec<Expr> =
                names.iter().map(|n| expr::column(n).interpolate(method)).collect();
            lf.with_columns(exprs)
        }
        Step::Pivot { on, index, values, agg, separator } => {
            pivot(lf, on, index, values, agg, separator)?
        }
        Step::Unpivot { index, on, variable_name, value_name } => lf.unpivot(UnpivotArgsDSL {
            on: on.as_deref().map(expr::selector),
            index: expr::selector(index),
            variable_name: variable_name.as_deref().map(Into::into),
            value_name: value_name.as_deref().map(Into::into),
        }),
        Step::Describe { percentiles } => describe::describe(lf, percentiles)?.lazy(),
        Step::Resample { index, every, period, offset, closed, label, by, aggs } => {
            let every = expr::positive_duration("every", every)?;
            let options = DynamicGroupOptions {
                every,
                period: match period {
                    Some(p) => expr::positive_duration("period", p)?,
                    None => every,
                },
                offset: match offset {
                    Some(o) => {
                        let o = expr::duration("offset", o)?;
                        expr::check_offset(&every, &o)?;
                        o
                    }
                    None => Duration::parse("0ns"),
                },
                label: match label.as_str() {
                    "left" => Label::Left,
                    "right" => Label::Right,
                    "datapoint" => Label::DataPoint,
                    other => {
                        return Err(Error::invalid(format!(
                            "`label`: unknown `{other}` (left, right, datapoint)"
                        )));
                    }
                },
                closed_window: closed_window(closed)?,
                ..Default::default()
            };
            lf.group_by_dynamic(expr::column(index), expr::columns(by), options)
                .agg(expr::parse_all("aggs", aggs)?)
        }
        Step::Rolling { columns, agg, window_size, window, by, min_periods, closed } => {
            rolling(lf, columns, agg, *window_size, window, by, *min_periods, closed)?
        }
        Step::Shift { n, columns, suffix } => {
            per_column(lf, columns, suffix, |e| e.shift(lit(*n)))?
        }
        Step::Diff { n, columns, suffix } => {
            per_column(lf, columns, suffix, |e| e.diff(lit(*n), polars::series::ops::NullBehavior::Ignore))?
        }
        Step::PctChange { n, columns, suffix } => {
            per_column(lf, columns, suffix, |e| e.pct_change(lit(*n)))?
        }
        Step::CumSum { columns, reverse, suffix } => {
            per_column(lf, columns, suffix, |e| e.cum_sum(*reverse))?
        }
        Step::Cumulative { kind, columns, reverse, suffix } => {
            let reverse = *reverse;
            let f: fn(Expr, bool) -> Expr = match kind.as_str() {
                "sum" => |e, r| e.cum_sum(r),
                "prod" => |e, r| e.cum_prod(r),
                "min" => |e, r| e.cum_min(r),
                "max" => |e, r| e.cum_max(r),
                "count" => |e, r| e.cum_count(r),
                other => {
                    return Err(Error::invalid(format!(
                        "`kind`: unknown `{other}` (sum, prod, min, max, count)"
                    )));
                }
            };
            per_column(lf, columns, suffix, |e| f(e, reverse))?
        }
        Step::Sample { n, fraction, with_replacement, shuffle, seed } => {
            let df = lf.collect()?;
            let sampled = match (n, fraction) {
                (Some(n), None) => {
                    df.sample_n_literal(*n as usize, *with_replacement, Some(*shuffle), *seed)?
                }
                (None, Some(f)) if *f >= 0.0 => {
                    let n = (df.height() as f64 * f).floor() as usize;
                    df.sample_n_literal(n, *with_replacement, Some(*shuffle), *seed)?
                }
                _ => return Err(Error::invalid("`n`: give exactly one of `n` or a non-negative `fraction`")),
            };
            sampled.lazy()
        }
    })
}

fn idx(param: &str, n: u64) -> Result<IdxSize> {
    IdxSize::try_from(n).map_err(|_| Error::invalid(format!("`{param}`: {n} is too large")))
}

fn closed_window(text: &str) -> Result<ClosedWindow> {
    match text {
        "left" => Ok(ClosedWindow::Left),
        "right" => Ok(ClosedWindow::Right),
        "both" => Ok(ClosedWindow::Both),
        "none" => Ok(ClosedWindow::None),
        other => Err(Error::invalid(format!("`closed`: unknown `{other}` (left, right, both, none)"))),
    }
}

/// How many pairs of rows a keyed join of `left` and `right` matches: the sum over key values of
/// the rows with that value on each side, multiplied (null keys match nothing). Two
/// aggregations of the keys, far cheaper than the join they stand for when keys repeat.
fn matched_pairs(left: &LazyFrame, l: Vec<Expr>, right: &LazyFrame, r: Vec<Expr>) -> Result<u64> {
    const LEFT: &str = "__polarway_left_rows";
    const RIGHT: &str = "__polarway_right_rows";
    let counts = |lf: &LazyFrame, keys: &[Expr], name: &str| lf.clone().group_by(keys.to_vec()).agg([len().alias(name)]);
    let pairs = counts(left, &l, LEFT)
        .join(counts(right, &r, RIGHT), l, r, JoinArgs::new(JoinType::Inner))
        .select([(col(LEFT).cast(DataType::Float64) * col(RIGHT).cast(DataType::Float64)).sum()])
        .collect()?;
    let pairs = pairs.columns()[0].f64()?.get(0).unwrap_or(0.0);
    // Saturates: a float past u64::MAX converts to u64::MAX.
    Ok(pairs as u64)
}

fn join_keys(
    on: &[String],
    left_on: &[String],
    right_on: &[String],
    cross: bool,
) -> Result<(Vec<Expr>, Vec<Expr>)> {
    if cross {
        if !on.is_empty() || !left_on.is_empty() || !right_on.is_empty() {
            return Err(Error::invalid("`on`: a cross join takes no keys"));
        }
        return Ok((vec![], vec![]));
    }
    match (on.is_empty(), left_on.is_empty(), right_on.is_empty()) {
        (false, true, true) => Ok((expr::columns(on), expr::columns(on))),
        (true, false, false) if left_on.len() == right_on.len() => {
            Ok((expr::columns(left_on), expr::columns(right_on)))
        }
        _ => Err(Error::invalid(
            "`on`: give `on`, or `left_on` and `right_on` of the same length",
        )),
    }
}

fn pivot(
    lf: LazyFrame,
    on: &[String],
    index: &[String],
    values: &[String],
    agg: &str,
    separator: &str,
) -> Result<LazyFrame> {
    if on.is_empty() {
        return Err(Error::invalid("`on`: pivot needs at least one column"));
    }
    let agg = match agg {
        "first" => element().first(),
        "last" => element().last(),
        "sum" => element().sum(),
        "mean" => element().mean(),
        "median" => element().median(),
        "min" => element().min(),
        "max" => element().max(),
        "count" => element().count(),
        "len" => element().len(),
        other => {
            return Err(Error::invalid(format!(
                "`agg`: unknown `{other}` (first, last, sum, mean, median, min, max, count, len)"
            )));
        }
    };
    // The output columns depend on the data: find the distinct `on` values first.
    let df = lf.collect()?;
    let on_columns = df
        .clone()
        .lazy()
        .select(expr::columns(on))
        .unique_stable(None, UniqueKeepStrategy::First)
        .collect()?;
    let mut index = index.to_vec();
    let mut values = values.to_vec();
    let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    if values.is_empty() {
        values = names
            .iter()
            .filter(|n| !on.contains(n) && !index.contains(n))
            .cloned()
            .collect();
    } else if index.is_empty() {
        index = names
            .iter()
            .filter(|n| !on.contains(n) && !values.contains(n))
            .cloned()
            .collect();
    }
    Ok(df.lazy().pivot(
        expr::selector(on),
        std::sync::Arc::new(on_columns),
        expr::selector(&index),
        expr::selector(&values),
        agg,
        true,
        separator.into(),
        polars::frame::PivotColumnNaming::Auto,
    ))
}

#[allow(clippy::too_many_arguments)]
fn rolling(
    lf: LazyFrame,
    columns: &[String],
    agg: &str,
    window_size: Option<usize>,
    window: &Option<String>,
    by: &Option<String>,
    min_periods: Option<usize>,
    closed: &str,
) -> Result<LazyFrame> {
    let exprs = match (window_size, window, by) {
        (Some(size), None, None) => {
            if size == 0 {
                return Err(Error::invalid("`window_size`: must be at least 1"));
            }
            let options = RollingOptionsFixedWindow {
                window_size: size,
                min_periods: min_periods.unwrap_or(size),
                ..Default::default()
            };
            columns
                .iter()
                .map(|c| {
                    let e = expr::column(c);
                    let out = match agg {
                        "mean" => e.rolling_mean(options.clone()),
                        "sum" => e.rolling_sum(options.clone()),
                        "min" => e.rolling_min(options.clone()),
                        "max" => e.rolling_max(options.clone()),
                        "median" => e.rolling_median(options.clone()),
                        "std" => e.rolling_std(options.clone()),
                        "var" => e.rolling_var(options.clone()),
                        other => return Err(unknown_rolling(other)),
                    };
                    Ok(out.alias(format!("{c}_rolling_{agg}").as_str()))
                })
                .collect::<Result<Vec<_>>>()?
        }
        (None, Some(w), Some(by)) => {
            let options = RollingOptionsDynamicWindow {
                window_size: expr::positive_duration("window", w)?,
                min_periods: min_periods.unwrap_or(1),
                closed_window: closed_window(closed)?,
                fn_params: None,
            };
            columns
                .iter()
                .map(|c| {
                    let e = expr::column(c);
                    let b = expr::column(by);
                    let out = match agg {
                        "mean" => e.rolling_mean_by(b, options.clone()),
                        "sum" => e.rolling_sum_by(b, options.clone()),
                        "min" => e.rolling_min_by(b, options.clone()),
                        "max" => e.rolling_max_by(b, options.clone()),
                        "median" => e.rolling_median_by(b, options.clone()),
                        "std" => e.rolling_std_by(b, options.clone()),
                        "var" => e.rolling_var_by(b, options.clone()),
                        other => return Err(unknown_rolling(other)),
                    };
                    Ok(out.alias(format!("{c}_rolling_{agg}").as_str()))
                })
                .collect::<Result<Vec<_>>>()?
        }
        _ => {
            return Err(Error::invalid(
                "`window_size`: give `window_size` (rows), or `window` (a duration) with `by`",
            ));
        }
    };
    Ok(lf.with_columns(exprs))
}

fn unknown_rolling(agg: &str) -> Error {
    Error::invalid(format!("`agg`: unknown `{agg}` (mean, sum, min, max, median, std, var)"))
}

#[cfg(test)]
mod tests;
