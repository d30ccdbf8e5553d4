//! Operations that combine frames: keyed joins, as-of joins, inequality joins and concat.
//!
//! A join's other side (`right`) and a concat's `inputs` are sources: stored results, scans, or
//! sub-plans, all built into the one lazy plan; a DoAction names its own side `left`. A join of
//! stored results is bounded before it runs by the pairs its keys would match
//! ([`matched_pairs`]), so that a join of repeated keys cannot fill the worker's memory. A side
//! whose rows are not known before it runs (a scan, or a plan over one) is not counted: counting
//! would run its plan twice.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::expr::{self, Expression, Key};
use super::{Context, Inputs, Operation, Spec, yes};
use super::{Source, UNKNOWN_ROWS};
use crate::error::{Error, Result};

/// How rows of the two sides pair up.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// Matched rows only.
    Inner,
    /// Every left row.
    Left,
    /// Every right row.
    Right,
    /// Every row of both.
    #[serde(alias = "outer")]
    Full,
    /// Left rows that have a match.
    Semi,
    /// Left rows without a match.
    Anti,
    /// Every pair.
    Cross,
}

impl How {
    fn join_type(self) -> JoinType {
        match self {
            How::Inner => JoinType::Inner,
            How::Left => JoinType::Left,
            How::Right => JoinType::Right,
            How::Full => JoinType::Full,
            How::Semi => JoinType::Semi,
            How::Anti => JoinType::Anti,
            How::Cross => JoinType::Cross,
        }
    }

    fn name(self) -> &'static str {
        match self {
            How::Inner => "inner",
            How::Left => "left",
            How::Right => "right",
            How::Full => "full",
            How::Semi => "semi",
            How::Anti => "anti",
            How::Cross => "cross",
        }
    }
}

fn inner() -> How {
    How::Inner
}

/// Join with another source on keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// The other side.
    pub right: Source,
    /// Keys on both sides: column names or native expressions.
    #[serde(default)]
    pub on: Vec<Key>,
    /// Or keys per side.
    #[serde(default)]
    pub left_on: Vec<Key>,
    /// Or keys per side.
    #[serde(default)]
    pub right_on: Vec<Key>,
    /// The join type.
    #[serde(default = "inner")]
    pub how: How,
    /// Appended to right columns whose names clash (`_right`).
    #[serde(default)]
    pub suffix: Option<String>,
}

impl Join {
    fn keys(&self) -> Result<(Vec<Expr>, Vec<Expr>)> {
        let (on, left_on, right_on) = (&self.on, &self.left_on, &self.right_on);
        if self.how == How::Cross {
            if !on.is_empty() || !left_on.is_empty() || !right_on.is_empty() {
                return Err(Error::invalid("`on`: a cross join takes no keys"));
            }
            return Ok((vec![], vec![]));
        }
        match (on.is_empty(), left_on.is_empty(), right_on.is_empty()) {
            (false, true, true) => Ok((expr::key_exprs("on", on)?, expr::key_exprs("on", on)?)),
            (true, false, false) if left_on.len() == right_on.len() => {
                Ok((expr::key_exprs("left_on", left_on)?, expr::key_exprs("right_on", right_on)?))
            }
            _ => Err(Error::invalid("`on`: give `on`, or `left_on` and `right_on` of the same length")),
        }
    }
}

impl Operation for Join {
    const SPEC: Spec = Spec {
        name: "join",
        example: r#"{"left": h1, "right": h2, "on": ["sym"] | "left_on"/"right_on", "how": "inner|left|right|full|semi|anti|cross", "suffix": "_right"}"#,
        inputs: Inputs::Pair,
        streams: true,
    };
    fn apply(&self, lf: LazyFrame, cx: &Context) -> Result<LazyFrame> {
        let (l, r) = self.keys()?;
        let args = JoinArgs::new(self.how.join_type()).with_suffix(self.suffix.as_deref().map(Into::into));
        Ok(lf.join(cx.source(&self.right)?.lf, l, r, args))
    }
    fn sources(&self) -> Vec<&Source> {
        vec![&self.right]
    }
    fn rows(&self, rows: u64, lf: &LazyFrame, cx: &Context) -> Result<u64> {
        let right = cx.source(&self.right)?;
        let product = rows.saturating_mul(right.rows.max(1));
        Ok(match self.how {
            // A side of at most one row (a scalar subquery) cannot multiply the other: neither
            // is counted.
            How::Cross if rows <= 1 || right.rows <= 1 => {
                if rows <= 1 {
                    right.rows
                } else {
                    rows
                }
            }
            How::Cross => {
                let (rows, right) = (counted(rows, lf)?, counted(right.rows, &right.lf)?);
                cx.limits.check_cross_join(rows, right)?;
                rows.saturating_mul(right.max(1))
            }
            How::Semi | How::Anti => rows,
            _ if rows == UNKNOWN_ROWS || right.rows == UNKNOWN_ROWS => UNKNOWN_ROWS,
            // Past the limit only if keys repeat on both sides: bound the pairs from the stored
            // right side when it is the smaller one (its keys' largest count, times the left's
            // rows), and count them exactly only if that bound passes the limit.
            _ if product > cx.limits.max_join_rows => {
                let (l, r) = self.keys()?;
                let unmatched = match self.how {
                    How::Left => rows,
                    How::Right => right.rows,
                    How::Full => rows.saturating_add(right.rows),
                    _ => 0,
                };
                let bound = if right.rows <= rows {
                    Some(rows.saturating_mul(largest_key_count(&right.lf, &r)?))
                } else {
                    None
                };
                let pairs = match bound {
                    Some(b) if b.saturating_add(unmatched) <= cx.limits.max_join_rows => b,
                    _ => matched_pairs(lf, l, &right.lf, r)?,
                };
                let out = pairs.saturating_add(unmatched);
                cx.limits.check_join(self.how.name(), out)?;
                out
            }
            _ => product,
        })
    }
}

/// How an as-of join picks its match.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The last right key at or before the left key.
    Backward,
    /// The first right key at or after it.
    Forward,
    /// The nearest.
    Nearest,
}

fn backward() -> Strategy {
    Strategy::Backward
}

/// As-of join with another source on a sorted key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsofJoin {
    /// The other side.
    pub right: Source,
    /// The sorted key on both sides.
    #[serde(default)]
    pub on: Option<String>,
    /// Or the key per side.
    #[serde(default)]
    pub left_on: Option<String>,
    /// Or the key per side.
    #[serde(default)]
    pub right_on: Option<String>,
    /// Match within groups of these columns.
    #[serde(default)]
    pub by: Vec<String>,
    /// Which match.
    #[serde(default = "backward")]
    pub strategy: Strategy,
    /// The furthest a match may be: a duration string or a number in the key's unit.
    #[serde(default)]
    pub tolerance: Option<serde_json::Value>,
    /// Appended to right columns whose names clash.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Whether equal keys match.
    #[serde(default = "yes")]
    pub allow_exact_matches: bool,
}

impl Operation for AsofJoin {
    const SPEC: Spec = Spec {
        name: "asof_join",
        example: r#"{"left": h1, "right": h2, "on": "ts" | "left_on"/"right_on", "by": ["sym"], "strategy": "backward|forward|nearest", "tolerance": "5m" | 10, "suffix": "_right", "allow_exact_matches": true}"#,
        inputs: Inputs::Pair,
        streams: false,
    };
    fn apply(&self, lf: LazyFrame, cx: &Context) -> Result<LazyFrame> {
        let (l, r) = match (&self.on, &self.left_on, &self.right_on) {
            (Some(on), None, None) => (on.clone(), on.clone()),
            (None, Some(l), Some(r)) => (l.clone(), r.clone()),
            _ => return Err(Error::invalid("`on`: give `on`, or both `left_on` and `right_on`")),
        };
        let strategy = match self.strategy {
            Strategy::Backward => AsofStrategy::Backward,
            Strategy::Forward => AsofStrategy::Forward,
            Strategy::Nearest => AsofStrategy::Nearest,
        };
        let (tolerance, tolerance_str) = match &self.tolerance {
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
        let by: Option<Vec<PlSmallStr>> =
            (!self.by.is_empty()).then(|| self.by.iter().map(|b| b.as_str().into()).collect());
        let options = AsOfOptions {
            strategy,
            tolerance,
            tolerance_str,
            left_by: by.clone(),
            right_by: by,
            allow_eq: self.allow_exact_matches,
            check_sortedness: true,
        };
        let args = JoinArgs::new(JoinType::AsOf(Box::new(options))).with_suffix(self.suffix.as_deref().map(Into::into));
        Ok(lf.join(cx.source(&self.right)?.lf, [expr::column(&l)], [expr::column(&r)], args))
    }
    fn sources(&self) -> Vec<&Source> {
        vec![&self.right]
    }
}

/// Join with another source on predicates over both sides (`a < b`), as Polars' `join_where`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinWhere {
    /// The other side.
    pub right: Source,
    /// Predicates, all of which must hold (SQL text or native expressions).
    pub predicates: Vec<Expression>,
    /// Appended to right columns whose names clash (`_right`).
    #[serde(default)]
    pub suffix: Option<String>,
}

impl Operation for JoinWhere {
    const SPEC: Spec = Spec {
        name: "join_where",
        example: r#"{"left": h1, "right": h2, "predicates": ["start <= ts", "ts < end"], "suffix": "_right"}"#,
        inputs: Inputs::Pair,
        streams: false,
    };
    fn apply(&self, lf: LazyFrame, cx: &Context) -> Result<LazyFrame> {
        if self.predicates.is_empty() {
            return Err(Error::invalid("`predicates`: give at least one"));
        }
        let mut builder = lf.join_builder().with(cx.source(&self.right)?.lf);
        if let Some(s) = &self.suffix {
            builder = builder.suffix(s.as_str());
        }
        Ok(builder.join_where(expr::to_exprs("predicates", &self.predicates)?))
    }
    fn sources(&self) -> Vec<&Source> {
        vec![&self.right]
    }
    fn rows(&self, rows: u64, lf: &LazyFrame, cx: &Context) -> Result<u64> {
        // Any pair may match: bounded like a cross join.
        let right = cx.source(&self.right)?;
        let (rows, right) = (counted(rows, lf)?, counted(right.rows, &right.lf)?);
        cx.limits.check_cross_join(rows, right)?;
        Ok(rows.saturating_mul(right.max(1)))
    }
}

/// How `concat` lines frames up.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConcatHow {
    /// Rows appended; same schema.
    Vertical,
    /// Rows appended; columns cast to a common type.
    VerticalRelaxed,
    /// Columns side by side.
    Horizontal,
    /// Rows appended; missing columns null.
    Diagonal,
    /// Diagonal, with common types.
    DiagonalRelaxed,
}

fn vertical() -> ConcatHow {
    ConcatHow::Vertical
}

/// Append other sources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concat {
    /// The frames appended to this one.
    pub inputs: Vec<Source>,
    /// How.
    #[serde(default = "vertical")]
    pub how: ConcatHow,
}

impl Operation for Concat {
    const SPEC: Spec = Spec {
        name: "concat",
        example: r#"{"inputs": [h1, h2], "how": "vertical|vertical_relaxed|horizontal|diagonal|diagonal_relaxed"}"#,
        inputs: Inputs::Many,
        streams: false,
    };
    fn apply(&self, lf: LazyFrame, cx: &Context) -> Result<LazyFrame> {
        let mut parts = vec![lf];
        for source in &self.inputs {
            parts.push(cx.source(source)?.lf);
        }
        let relaxed = UnionArgs { to_supertypes: true, ..Default::default() };
        Ok(match self.how {
            ConcatHow::Vertical => concat(parts, UnionArgs::default())?,
            ConcatHow::VerticalRelaxed => concat(parts, relaxed)?,
            ConcatHow::Diagonal => concat_lf_diagonal(parts, UnionArgs::default())?,
            ConcatHow::DiagonalRelaxed => concat_lf_diagonal(parts, relaxed)?,
            ConcatHow::Horizontal => concat_lf_horizontal(parts, HConcatOptions::default())?,
        })
    }
    fn sources(&self) -> Vec<&Source> {
        self.inputs.iter().collect()
    }
    fn rows(&self, rows: u64, _: &LazyFrame, cx: &Context) -> Result<u64> {
        self.inputs.iter().try_fold(rows, |acc, s| Ok(acc.saturating_add(cx.source(s)?.rows)))
    }
}

/// `rows`, or when it is not known, the rows `lf` makes, counted. The count is the length of the
/// first column, not `len()`: Polars 0.55 prunes every column under a bare `len()`, and with them
/// an aggregation over a join, so it would count the join's rows instead of the one row made.
fn counted(rows: u64, lf: &LazyFrame) -> Result<u64> {
    if rows != UNKNOWN_ROWS {
        return Ok(rows);
    }
    let n = lf.clone().select([first().as_expr().len().cast(DataType::UInt64)]).collect()?;
    Ok(n.columns()[0].u64()?.get(0).unwrap_or(0))
}

/// The most rows of `side` that share one key value (0 for no rows): each row of the other side
/// matches at most that many. One aggregation of `side`'s keys, which (unlike [`matched_pairs`])
/// never evaluates the other side's plan.
fn largest_key_count(side: &LazyFrame, keys: &[Expr]) -> Result<u64> {
    const ROWS: &str = "__polarway_key_rows";
    let most = side
        .clone()
        .group_by(keys)
        .agg([len().alias(ROWS)])
        .select([col(ROWS).max().cast(DataType::Float64)])
        .collect()?;
    Ok(most.columns()[0].f64()?.get(0).unwrap_or(0.0) as u64)
}

/// How many pairs of rows a keyed join of `left` and `right` matches: the sum over key values of
/// the rows with that value on each side, multiplied (null keys match nothing). Two
/// aggregations of the keys, far cheaper than the join they stand for when keys repeat.
fn matched_pairs(left: &LazyFrame, l: Vec<Expr>, right: &LazyFrame, r: Vec<Expr>) -> Result<u64> {
    const LEFT: &str = "__polarway_left_rows";
    const RIGHT: &str = "__polarway_right_rows";
    let counts = |lf: &LazyFrame, keys: &[Expr], name: &str| lf.clone().group_by(keys).agg([len().alias(name)]);
    // Keys given as expressions are named by their output; the counts join on those names.
    let names = |keys: &[Expr], side: &str| -> Vec<Expr> {
        (0..keys.len()).map(|i| col(format!("__polarway_{side}_key_{i}"))).collect()
    };
    let alias = |keys: Vec<Expr>, side: &str| -> Vec<Expr> {
        keys.into_iter().enumerate().map(|(i, k)| k.alias(format!("__polarway_{side}_key_{i}"))).collect()
    };
    let (ln, rn) = (names(&l, "l"), names(&r, "r"));
    let pairs = counts(left, &alias(l, "l"), LEFT)
        .join(counts(right, &alias(r, "r"), RIGHT), ln, rn, JoinArgs::new(JoinType::Inner))
        .select([(col(LEFT).cast(DataType::Float64) * col(RIGHT).cast(DataType::Float64)).sum()])
        .collect()?;
    let pairs = pairs.columns()[0].f64()?.get(0).unwrap_or(0.0);
    // Saturates: a float past u64::MAX converts to u64::MAX.
    Ok(pairs as u64)
}

#[cfg(test)]
mod key_count_tests {
    use super::*;

    #[test]
    fn the_largest_key_count_bounds_the_pairs_from_one_side() {
        let side = df!("k" => [1i64, 2, 2, 3, 3, 3], "v" => [0i64; 6]).unwrap().lazy();
        assert_eq!(largest_key_count(&side, &[col("k")]).unwrap(), 3);
        let unique = df!("k" => (0..100i64).collect::<Vec<_>>()).unwrap().lazy();
        assert_eq!(largest_key_count(&unique, &[col("k")]).unwrap(), 1);
        let empty = df!("k" => Vec::<i64>::new()).unwrap().lazy();
        assert_eq!(largest_key_count(&empty, &[col("k")]).unwrap(), 0);
    }
}
