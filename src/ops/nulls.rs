//! Missing values: rows with nulls or NaNs dropped, nulls and NaNs filled, gaps interpolated.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::expr;
use super::{Context, Operation, Spec, columns_or_all};
use crate::error::{Error, Result};

/// Drop rows with nulls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropNulls {
    /// Columns to look at (all by default).
    #[serde(default)]
    pub subset: Option<Vec<String>>,
}

impl Operation for DropNulls {
    const SPEC: Spec = Spec::one("drop_nulls", r#"{"input": h, "subset": ["qty"]}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.drop_nulls(self.subset.as_deref().map(expr::selector)))
    }
}

/// Drop rows with NaN in a float column.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropNans {
    /// Columns to look at (all float columns by default).
    #[serde(default)]
    pub subset: Option<Vec<String>>,
}

impl Operation for DropNans {
    const SPEC: Spec = Spec::one("drop_nans", r#"{"input": h, "subset": ["price"]}"#, true);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.drop_nans(self.subset.as_deref().map(expr::selector)))
    }
}

/// How `fill_null` fills without a value.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FillStrategy {
    /// The last value before.
    Forward,
    /// The next value after.
    Backward,
    /// The column's mean.
    Mean,
    /// The column's minimum.
    Min,
    /// The column's maximum.
    Max,
    /// Zero.
    Zero,
    /// One.
    One,
}

/// Replace nulls with a value or by a strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillNull {
    /// A JSON scalar.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Or a strategy.
    #[serde(default)]
    pub strategy: Option<FillStrategy>,
    /// For forward and backward: at most this many nulls in a row.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Columns to fill (all by default).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

impl Operation for FillNull {
    const SPEC: Spec = Spec::one(
        "fill_null",
        r#"{"input": h, "value": 0 | "strategy": "forward|backward|mean|min|max|zero|one", "limit": 2, "columns": ["qty"]}"#,
        false,
    );
    fn apply(&self, mut lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let fill: Box<dyn Fn(Expr) -> Expr> = match (&self.value, self.strategy) {
            (Some(v), None) => {
                let v = expr::scalar("value", v)?;
                Box::new(move |e: Expr| e.fill_null(v.clone()))
            }
            (None, Some(s)) => {
                let strategy = match s {
                    FillStrategy::Forward => FillNullStrategy::Forward(self.limit),
                    FillStrategy::Backward => FillNullStrategy::Backward(self.limit),
                    FillStrategy::Mean => FillNullStrategy::Mean,
                    FillStrategy::Min => FillNullStrategy::Min,
                    FillStrategy::Max => FillNullStrategy::Max,
                    FillStrategy::Zero => FillNullStrategy::Zero,
                    FillStrategy::One => FillNullStrategy::One,
                };
                Box::new(move |e: Expr| e.fill_null_with_strategy(strategy))
            }
            _ => return Err(Error::invalid("`value`: give exactly one of `value` or `strategy`")),
        };
        let names = match (&self.columns, &self.value) {
            // Without `columns`, a value fills the columns of its kind, as Polars' `fill_null(v)`.
            (None, Some(v)) if !v.is_null() => {
                let fits = |dt: &DataType| match v {
                    serde_json::Value::Number(_) => dt.is_primitive_numeric() || dt.is_decimal(),
                    serde_json::Value::String(_) => dt.is_string(),
                    serde_json::Value::Bool(_) => dt.is_bool(),
                    _ => true,
                };
                lf.collect_schema()?.iter().filter(|(_, dt)| fits(dt)).map(|(n, _)| n.to_string()).collect()
            }
            _ => columns_or_all(&mut lf, &self.columns)?,
        };
        Ok(lf.with_columns(names.iter().map(|n| fill(expr::column(n))).collect::<Vec<_>>()))
    }
}

/// Replace NaN with a value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillNan {
    /// A JSON scalar.
    pub value: serde_json::Value,
}

impl Operation for FillNan {
    const SPEC: Spec = Spec::one("fill_nan", r#"{"input": h, "value": 0.0}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.fill_nan(expr::scalar("value", &self.value)?))
    }
}

/// How `interpolate` fills.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// On the line between the neighbours.
    Linear,
    /// With the nearest neighbour.
    Nearest,
}

/// Fill nulls by interpolation in numeric columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interpolate {
    /// The method.
    #[serde(default = "linear")]
    pub method: Interpolation,
    /// Columns (all numeric ones by default).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

fn linear() -> Interpolation {
    Interpolation::Linear
}

impl Operation for Interpolate {
    const SPEC: Spec =
        Spec::one("interpolate", r#"{"input": h, "method": "linear|nearest", "columns": ["price"]}"#, false);
    fn apply(&self, mut lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let method = match self.method {
            Interpolation::Linear => InterpolationMethod::Linear,
            Interpolation::Nearest => InterpolationMethod::Nearest,
        };
        let names = match &self.columns {
            Some(c) => c.clone(),
            None => lf
                .collect_schema()?
                .iter()
                .filter(|(_, dt)| dt.is_primitive_numeric())
                .map(|(n, _)| n.to_string())
                .collect(),
        };
        Ok(lf.with_columns(names.iter().map(|n| expr::column(n).interpolate(method)).collect::<Vec<_>>()))
    }
}
