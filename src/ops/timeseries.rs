//! Time series: fixed buckets (`resample`), windows per row (`rolling`, `group_by_rolling`),
//! regular timestamps (`upsample`), lags and running totals.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::expr::{self, Expression};
use super::{Context, Operation, Spec, columns_or_all};
use crate::error::{Error, Result};

/// Which ends of a window belong to it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Closed {
    /// `[start, end)`.
    Left,
    /// `(start, end]`.
    Right,
    /// `[start, end]`.
    Both,
    /// `(start, end)`.
    None,
}

impl Closed {
    fn window(self) -> ClosedWindow {
        match self {
            Closed::Left => ClosedWindow::Left,
            Closed::Right => ClosedWindow::Right,
            Closed::Both => ClosedWindow::Both,
            Closed::None => ClosedWindow::None,
        }
    }
}

fn left() -> Closed {
    Closed::Left
}
fn right() -> Closed {
    Closed::Right
}

/// Which time labels a `resample` bucket.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BucketLabel {
    /// The window's start.
    Left,
    /// The window's end.
    Right,
    /// The first data point in it.
    Datapoint,
}

fn label_left() -> BucketLabel {
    BucketLabel::Left
}

/// Time buckets on a datetime (or integer) column: Polars' `group_by_dynamic`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resample {
    /// The sorted time column.
    pub index: String,
    /// The stride between windows.
    pub every: String,
    /// The window length (`every` by default).
    #[serde(default)]
    pub period: Option<String>,
    /// Shift of the windows' starts.
    #[serde(default)]
    pub offset: Option<String>,
    /// Which window ends are inside.
    #[serde(default = "left")]
    pub closed: Closed,
    /// Which time labels a bucket.
    #[serde(default = "label_left")]
    pub label: BucketLabel,
    /// Buckets per group of these columns.
    #[serde(default)]
    pub by: Vec<String>,
    /// Aggregations (SQL text or native).
    pub aggs: Vec<Expression>,
}

impl Operation for Resample {
    const SPEC: Spec = Spec::one(
        "resample",
        r#"{"input": h, "index": "ts", "every": "1h", "period": "1h", "offset": "0m", "closed": "left", "label": "left", "by": ["sym"], "aggs": ["sum(qty) AS qty"]}"#,
        false,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let every = expr::positive_duration("every", &self.every)?;
        let options = DynamicGroupOptions {
            every,
            period: match &self.period {
                Some(p) => expr::positive_duration("period", p)?,
                None => every,
            },
            offset: match &self.offset {
                Some(o) => {
                    let o = expr::duration("offset", o)?;
                    expr::check_offset(&every, &o)?;
                    o
                }
                None => Duration::parse("0ns"),
            },
            label: match self.label {
                BucketLabel::Left => Label::Left,
                BucketLabel::Right => Label::Right,
                BucketLabel::Datapoint => Label::DataPoint,
            },
            closed_window: self.closed.window(),
            ..Default::default()
        };
        Ok(lf
            .group_by_dynamic(expr::column(&self.index), expr::columns(&self.by), options)
            .agg(expr::to_exprs("aggs", &self.aggs)?))
    }
}

/// One window per row, ending at that row's time: Polars' `LazyFrame.rolling(...).agg(...)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupByRolling {
    /// The sorted time (or integer) column.
    pub index: String,
    /// The window length.
    pub period: String,
    /// Shift of the window (`-period` by default: the window ends at the row).
    #[serde(default)]
    pub offset: Option<String>,
    /// Which window ends are inside.
    #[serde(default = "right")]
    pub closed: Closed,
    /// Windows per group of these columns.
    #[serde(default)]
    pub by: Vec<String>,
    /// Aggregations (SQL text or native).
    pub aggs: Vec<Expression>,
}

impl Operation for GroupByRolling {
    const SPEC: Spec = Spec::one(
        "group_by_rolling",
        r#"{"input": h, "index": "ts", "period": "2h", "offset": "-2h", "closed": "right", "by": ["sym"], "aggs": ["sum(qty) AS qty"]}"#,
        false,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let period = expr::positive_duration("period", &self.period)?;
        let offset = match &self.offset {
            Some(o) => {
                let o = expr::duration("offset", o)?;
                expr::check_offset(&period, &o)?;
                o
            }
            None => -period,
        };
        let options = RollingGroupOptions {
            index_column: self.index.as_str().into(),
            period,
            offset,
            closed_window: self.closed.window(),
        };
        Ok(lf
            .rolling(expr::column(&self.index), expr::columns(&self.by), options)
            .agg(expr::to_exprs("aggs", &self.aggs)?))
    }
}

/// Rows at every `every` between a time column's first and last value, nulls where no row was.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upsample {
    /// The sorted time column.
    pub time_column: String,
    /// The interval.
    pub every: String,
    /// Upsample each group of these columns.
    #[serde(default)]
    pub by: Vec<String>,
    /// Keep the groups' input order.
    #[serde(default)]
    pub maintain_order: bool,
}

impl Operation for Upsample {
    const SPEC: Spec = Spec::one(
        "upsample",
        r#"{"input": h, "time_column": "ts", "every": "1h", "by": ["sym"], "maintain_order": false}"#,
        false,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        use polars::time::PolarsUpsample;
        let every = expr::positive_duration("every", &self.every)?;
        let df = lf.collect()?;
        let by: Vec<PlSmallStr> = self.by.iter().map(|b| b.as_str().into()).collect();
        let out = if self.maintain_order {
            df.upsample_stable(by, &self.time_column, every)?
        } else {
            df.upsample(by, &self.time_column, every)?
        };
        Ok(out.lazy())
    }
    fn rows(&self, rows: u64, lf: &LazyFrame, cx: &Context) -> Result<u64> {
        // The rows made are the time span over the interval: compute it before upsampling.
        let every = expr::positive_duration("every", &self.every)?;
        let step = every.duration_ns().max(1) as f64;
        let t = expr::column(&self.time_column).to_physical();
        let span = lf.clone().select([(t.clone().max() - t.min()).cast(DataType::Float64).alias("span")]).collect()?;
        let span = span.columns()[0].f64()?.get(0).unwrap_or(0.0);
        let unit = match lf.clone().collect_schema()?.get(self.time_column.as_str()) {
            Some(DataType::Datetime(TimeUnit::Milliseconds, _)) => 1e6,
            Some(DataType::Datetime(TimeUnit::Microseconds, _)) => 1e3,
            Some(DataType::Date) => 86_400e9,
            _ => 1.0,
        };
        let made = (span * unit / step) as u64;
        let made = made.saturating_mul(self.by.len().max(1) as u64);
        cx.limits.check_join("upsample", if rows == super::UNKNOWN_ROWS { made } else { rows.saturating_add(made) })?;
        let out = rows.saturating_add(made);
        Ok(out)
    }
}

/// The aggregate of a `rolling` window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RollingAgg {
    /// Mean.
    Mean,
    /// Sum.
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Median.
    Median,
    /// Standard deviation.
    Std,
    /// Variance.
    Var,
}

impl RollingAgg {
    fn name(self) -> &'static str {
        match self {
            RollingAgg::Mean => "mean",
            RollingAgg::Sum => "sum",
            RollingAgg::Min => "min",
            RollingAgg::Max => "max",
            RollingAgg::Median => "median",
            RollingAgg::Std => "std",
            RollingAgg::Var => "var",
        }
    }
}

fn mean() -> RollingAgg {
    RollingAgg::Mean
}

/// Rolling aggregates over `window_size` rows, or over a duration `window` of column `by`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rolling {
    /// The columns aggregated; each gets `<col>_rolling_<agg>`.
    pub columns: Vec<String>,
    /// The aggregate.
    #[serde(default = "mean")]
    pub agg: RollingAgg,
    /// Window by rows.
    #[serde(default)]
    pub window_size: Option<usize>,
    /// Or window by a duration of `by`.
    #[serde(default)]
    pub window: Option<String>,
    /// The time column of a duration window.
    #[serde(default)]
    pub by: Option<String>,
    /// Values needed for a non-null result.
    #[serde(default)]
    pub min_periods: Option<usize>,
    /// Which window ends are inside (duration windows).
    #[serde(default = "right")]
    pub closed: Closed,
}

impl Operation for Rolling {
    const SPEC: Spec = Spec::one(
        "rolling",
        r#"{"input": h, "columns": ["price"], "agg": "mean|sum|min|max|median|std|var", "window_size": 3 | "window": "2h" with "by": "ts", "min_periods": 1, "closed": "right"}"#,
        false,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let agg = self.agg;
        let out = |c: &str, e: Expr| e.alias(format!("{c}_rolling_{}", agg.name()).as_str());
        let exprs: Vec<Expr> = match (self.window_size, &self.window, &self.by) {
            (Some(size), None, None) => {
                if size == 0 {
                    return Err(Error::invalid("`window_size`: must be at least 1"));
                }
                let o = RollingOptionsFixedWindow {
                    window_size: size,
                    min_periods: self.min_periods.unwrap_or(size),
                    ..Default::default()
                };
                self.columns
                    .iter()
                    .map(|c| {
                        let e = expr::column(c);
                        out(
                            c,
                            match agg {
                                RollingAgg::Mean => e.rolling_mean(o.clone()),
                                RollingAgg::Sum => e.rolling_sum(o.clone()),
                                RollingAgg::Min => e.rolling_min(o.clone()),
                                RollingAgg::Max => e.rolling_max(o.clone()),
                                RollingAgg::Median => e.rolling_median(o.clone()),
                                RollingAgg::Std => e.rolling_std(o.clone()),
                                RollingAgg::Var => e.rolling_var(o.clone()),
                            },
                        )
                    })
                    .collect()
            }
            (None, Some(w), Some(by)) => {
                let o = RollingOptionsDynamicWindow {
                    window_size: expr::positive_duration("window", w)?,
                    min_periods: self.min_periods.unwrap_or(1),
                    closed_window: self.closed.window(),
                    fn_params: None,
                };
                self.columns
                    .iter()
                    .map(|c| {
                        let (e, b) = (expr::column(c), expr::column(by));
                        out(
                            c,
                            match agg {
                                RollingAgg::Mean => e.rolling_mean_by(b, o.clone()),
                                RollingAgg::Sum => e.rolling_sum_by(b, o.clone()),
                                RollingAgg::Min => e.rolling_min_by(b, o.clone()),
                                RollingAgg::Max => e.rolling_max_by(b, o.clone()),
                                RollingAgg::Median => e.rolling_median_by(b, o.clone()),
                                RollingAgg::Std => e.rolling_std_by(b, o.clone()),
                                RollingAgg::Var => e.rolling_var_by(b, o.clone()),
                            },
                        )
                    })
                    .collect()
            }
            _ => {
                return Err(Error::invalid(
                    "`window_size`: give `window_size` (rows), or `window` (a duration) with `by`",
                ));
            }
        };
        Ok(lf.with_columns(exprs))
    }
}

/// The columns and naming shared by the per-column operations below.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerColumn {
    /// Rows back (forward if negative).
    #[serde(default = "one_row")]
    pub n: i64,
    /// Columns (all by default).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// New columns `<name><suffix>`; without it the columns are replaced.
    #[serde(default)]
    pub suffix: Option<String>,
}

fn one_row() -> i64 {
    1
}

impl PerColumn {
    /// Applies `f(column, n)` to each chosen column.
    fn apply(&self, lf: LazyFrame, f: impl Fn(Expr, i64) -> Expr) -> Result<LazyFrame> {
        per_column(lf, &self.columns, &self.suffix, |e| f(e, self.n))
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

/// Lag (n > 0) or lead (n < 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Shift(pub PerColumn);

impl Operation for Shift {
    const SPEC: Spec = Spec::one("shift", r#"{"input": h, "n": 1, "columns": ["price"], "suffix": "_lag"}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        self.0.apply(lf, |e, n| e.shift(lit(n)))
    }
}

/// Difference with the value n rows earlier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Diff(pub PerColumn);

impl Operation for Diff {
    const SPEC: Spec = Spec::one("diff", r#"{"input": h, "n": 1, "columns": ["price"], "suffix": "_diff"}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        self.0.apply(lf, |e, n| e.diff(lit(n), polars::series::ops::NullBehavior::Ignore))
    }
}

/// Fractional change from the value n rows earlier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PctChange(pub PerColumn);

impl Operation for PctChange {
    const SPEC: Spec =
        Spec::one("pct_change", r#"{"input": h, "n": 1, "columns": ["price"], "suffix": "_pct"}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        self.0.apply(lf, |e, n| e.pct_change(lit(n)))
    }
}

/// Cumulative sum.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CumSum {
    /// Columns (all by default).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// From the last row up.
    #[serde(default)]
    pub reverse: bool,
    /// New columns `<name><suffix>`; without it the columns are replaced.
    #[serde(default)]
    pub suffix: Option<String>,
}

impl Operation for CumSum {
    const SPEC: Spec =
        Spec::one("cum_sum", r#"{"input": h, "columns": ["qty"], "reverse": false, "suffix": "_cum"}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let reverse = self.reverse;
        per_column(lf, &self.columns, &self.suffix, |e| e.cum_sum(reverse))
    }
}

/// A running aggregate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CumKind {
    /// Running sum.
    Sum,
    /// Running product.
    Prod,
    /// Running minimum.
    Min,
    /// Running maximum.
    Max,
    /// Running count of non-null values.
    Count,
}

/// Cumulative sum, product, min, max or count.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cumulative {
    /// The aggregate.
    pub kind: CumKind,
    /// Columns (all by default).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// From the last row up.
    #[serde(default)]
    pub reverse: bool,
    /// New columns `<name><suffix>`; without it the columns are replaced.
    #[serde(default)]
    pub suffix: Option<String>,
}

impl Operation for Cumulative {
    const SPEC: Spec = Spec::one(
        "cumulative",
        r#"{"input": h, "kind": "sum|prod|min|max|count", "columns": ["qty"], "reverse": false, "suffix": "_cum"}"#,
        false,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let (kind, r) = (self.kind, self.reverse);
        per_column(lf, &self.columns, &self.suffix, |e| match kind {
            CumKind::Sum => e.cum_sum(r),
            CumKind::Prod => e.cum_prod(r),
            CumKind::Min => e.cum_min(r),
            CumKind::Max => e.cum_max(r),
            CumKind::Count => e.cum_count(r),
        })
    }
}
