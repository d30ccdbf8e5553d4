//! Relational operations: rows kept, columns made, order and dedup.

use indexmap::IndexMap;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::aggregate::HashAggregate;
use super::expr::{self, Expression, Key};
use super::{Context, Flags, Operation, Spec, idx, yes};
use crate::error::{Error, Result};

/// Keep rows where a predicate holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// SQL text or a native expression.
    pub predicate: Expression,
}

impl Operation for Filter {
    const SPEC: Spec = Spec::one(
        "filter",
        r#"{"input": h, "predicate": "qty > 10 AND sym = 'MSFT'" | {"expr": <Polars JSON>}}"#,
        true,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.filter(self.predicate.to_expr("predicate")?))
    }
}

/// Project expressions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// The output columns, in order.
    pub columns: Vec<Expression>,
}

impl Operation for Select {
    const SPEC: Spec = Spec::one("select", r#"{"input": h, "columns": ["sym", "qty * 2 AS q2", {"expr": ...}]}"#, true);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.select(expr::to_exprs("columns", &self.columns)?))
    }
    fn rows(&self, rows: u64, _: &LazyFrame, _: &Context) -> Result<u64> {
        // Aggregations only (`sum(v) * 0.1 AS t`): one row, whatever the input. A cross join
        // with such a side (a scalar subquery) needs no count of the other.
        let exprs = expr::to_exprs("columns", &self.columns)?;
        Ok(if !exprs.is_empty() && exprs.iter().all(expr::reduces) { 1 } else { rows })
    }
}

/// `with_columns`' columns: name -> expression, or a list of (named) expressions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NewColumns {
    /// `{"name": expression}`, in the order sent.
    Named(IndexMap<String, Expression>),
    /// `[expression]`, each naming its own output (an alias, or its input column).
    List(Vec<Expression>),
}

/// Add or replace columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithColumns {
    /// The new columns, kept in the order sent.
    pub columns: NewColumns,
}

impl Operation for WithColumns {
    const SPEC: Spec =
        Spec::one("with_columns", r#"{"input": h, "columns": {"notional": "qty * price"} | [{"expr": ...}]}"#, true);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let exprs = match &self.columns {
            NewColumns::Named(map) => map
                .iter()
                .map(|(name, e)| Ok(e.to_expr("columns")?.alias(name.as_str())))
                .collect::<Result<Vec<_>>>()?,
            NewColumns::List(items) => expr::to_exprs("columns", items)?,
        };
        Ok(lf.with_columns(exprs))
    }
}

/// Sort by columns or expressions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sort {
    /// Column names or native expressions.
    pub by: Vec<Key>,
    /// Descending, for all or per key.
    #[serde(default)]
    pub descending: Flags,
    /// Nulls after the values.
    #[serde(default)]
    pub nulls_last: bool,
    /// Keep the input order among equal keys.
    #[serde(default)]
    pub maintain_order: bool,
}

impl Sort {
    fn options(&self) -> Result<SortMultipleOptions> {
        Ok(SortMultipleOptions::default()
            .with_order_descending_multi(self.descending.expand("descending", self.by.len())?)
            .with_nulls_last(self.nulls_last)
            .with_maintain_order(self.maintain_order))
    }
}

impl Operation for Sort {
    const SPEC: Spec = Spec::one(
        "sort",
        r#"{"input": h, "by": ["price"], "descending": [true], "nulls_last": false, "maintain_order": false}"#,
        true,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.sort_by_exprs(expr::key_exprs("by", &self.by)?, self.options()?))
    }
}

/// Group by keys and aggregate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBy {
    /// Key expressions (SQL text or native).
    pub by: Vec<Expression>,
    /// Aggregations (SQL text or native).
    pub aggs: Vec<Expression>,
    /// Groups in order of first appearance.
    #[serde(default)]
    pub maintain_order: bool,
}

impl Operation for GroupBy {
    const SPEC: Spec = Spec::one(
        "group_by",
        r#"{"input": h, "by": ["sym"], "aggs": ["sum(qty) AS total", {"expr": ...}], "maintain_order": false}"#,
        true,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let keys = expr::to_exprs("by", &self.by)?;
        let parsed = expr::parse_aggs("aggs", &self.aggs)?;
        let grouped = if self.maintain_order {
            lf.group_by_stable(keys).agg(parsed.aggs)
        } else {
            lf.group_by(keys).agg(parsed.aggs)
        };
        Ok(if parsed.hidden.is_empty() {
            grouped
        } else {
            grouped.with_columns(parsed.after).drop(cols(parsed.hidden))
        })
    }
    fn hash_aggregate(&self, schema: &Schema) -> Result<Option<HashAggregate>> {
        if self.maintain_order {
            return Ok(None);
        }
        let keys = expr::to_exprs("by", &self.by)?;
        Ok(HashAggregate::of(&keys, &expr::parse_aggs("aggs", &self.aggs)?, schema))
    }
}

/// First `n` rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// Rows to keep.
    pub n: u64,
}

impl Operation for Head {
    const SPEC: Spec = Spec::one("head", r#"{"input": h, "n": 3}"#, true);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.limit(idx("n", self.n)?))
    }
    fn rows(&self, rows: u64, _: &LazyFrame, _: &Context) -> Result<u64> {
        Ok(rows.min(self.n))
    }
}

/// First `n` rows (another name for `head`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Limit(pub Head);

impl Operation for Limit {
    const SPEC: Spec = Spec::one("limit", r#"{"input": h, "n": 3}"#, true);
    fn apply(&self, lf: LazyFrame, cx: &Context) -> Result<LazyFrame> {
        self.0.apply(lf, cx)
    }
    fn rows(&self, rows: u64, lf: &LazyFrame, cx: &Context) -> Result<u64> {
        self.0.rows(rows, lf, cx)
    }
}

/// Last `n` rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tail {
    /// Rows to keep.
    pub n: u64,
}

impl Operation for Tail {
    const SPEC: Spec = Spec::one("tail", r#"{"input": h, "n": 3}"#, true);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.tail(idx("n", self.n)?))
    }
    fn rows(&self, rows: u64, _: &LazyFrame, _: &Context) -> Result<u64> {
        Ok(rows.min(self.n))
    }
}

/// Rows `offset..offset+length`; a negative offset counts from the end.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slice {
    /// First row.
    pub offset: i64,
    /// Rows to keep.
    pub length: u64,
}

impl Operation for Slice {
    const SPEC: Spec = Spec::one("slice", r#"{"input": h, "offset": 2, "length": 3}"#, true);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.slice(self.offset, idx("length", self.length)?))
    }
    fn rows(&self, rows: u64, _: &LazyFrame, _: &Context) -> Result<u64> {
        Ok(rows.min(self.length))
    }
}

/// Remove columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drop {
    /// Column names.
    pub columns: Vec<String>,
}

impl Operation for Drop {
    const SPEC: Spec = Spec::one("drop", r#"{"input": h, "columns": ["a", "b"]}"#, true);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.drop(expr::selector(&self.columns)))
    }
}

/// Rename columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// Old name -> new name.
    pub mapping: IndexMap<String, String>,
    /// Refuse names that do not exist.
    #[serde(default = "yes")]
    pub strict: bool,
}

impl Operation for Rename {
    const SPEC: Spec = Spec::one("rename", r#"{"input": h, "mapping": {"old": "new"}, "strict": true}"#, true);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.rename(self.mapping.keys(), self.mapping.values(), self.strict))
    }
}

/// Cast columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cast {
    /// Column -> type name (Polars or SQL names).
    pub dtypes: IndexMap<String, String>,
    /// Fail on values that do not convert (else they become null).
    #[serde(default = "yes")]
    pub strict: bool,
}

impl Operation for Cast {
    const SPEC: Spec = Spec::one(
        "cast",
        r#"{"input": h, "dtypes": {"qty": "f64", "ts": "datetime[ms, UTC]"}, "strict": true}"#,
        false,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let exprs = self
            .dtypes
            .iter()
            .map(|(name, t)| {
                let dt = expr::dtype("dtypes", t)?;
                let c = expr::column(name);
                Ok(if self.strict { c.strict_cast(dt) } else { c.cast(dt) })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(lf.with_columns(exprs))
    }
}

/// Which of the duplicate rows `unique` keeps.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The first.
    First,
    /// The last.
    Last,
    /// Any one (fastest).
    Any,
    /// None of them.
    None,
}

/// Drop duplicate rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unique {
    /// Columns that define a duplicate (all by default).
    #[serde(default)]
    pub subset: Option<Vec<String>>,
    /// Which duplicate stays.
    #[serde(default = "any")]
    pub keep: Keep,
    /// Keep the input order.
    #[serde(default = "yes")]
    pub maintain_order: bool,
}

fn any() -> Keep {
    Keep::Any
}

impl Operation for Unique {
    const SPEC: Spec = Spec::one(
        "unique",
        r#"{"input": h, "subset": ["sym"], "keep": "first|last|any|none", "maintain_order": true}"#,
        false,
    );
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let keep = match self.keep {
            Keep::First => UniqueKeepStrategy::First,
            Keep::Last => UniqueKeepStrategy::Last,
            Keep::Any => UniqueKeepStrategy::Any,
            Keep::None => UniqueKeepStrategy::None,
        };
        let subset = self.subset.as_deref().map(expr::selector);
        Ok(if self.maintain_order { lf.unique_stable(subset, keep) } else { lf.unique(subset, keep) })
    }
}

/// One row per element of list columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Explode {
    /// List (or array) columns, exploded together.
    pub columns: Vec<String>,
    /// An empty list gives one null row (else no row, as in Polars 2).
    #[serde(default)]
    pub empty_as_null: bool,
    /// A null list gives one null row (else no row).
    #[serde(default = "yes")]
    pub keep_nulls: bool,
}

impl Operation for Explode {
    const SPEC: Spec =
        Spec::one("explode", r#"{"input": h, "columns": ["tags"], "empty_as_null": false, "keep_nulls": true}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let options = ExplodeOptions { empty_as_null: self.empty_as_null, keep_nulls: self.keep_nulls };
        Ok(lf.explode(expr::selector(&self.columns), options))
    }
    fn rows(&self, rows: u64, lf: &LazyFrame, cx: &Context) -> Result<u64> {
        // Elements are data: count them, as for a join's matched pairs.
        let lengths = self.columns.first().map(|c| expr::column(c).list().len().sum().alias("n"));
        let Some(lengths) = lengths else { return Ok(rows) };
        let counted = lf.clone().select([lengths]).collect()?;
        let n = counted.columns()[0].cast(&DataType::UInt64)?.u64()?.get(0).unwrap_or(0);
        cx.limits.check_join("explode", n)?;
        let out = n.saturating_add(rows);
        Ok(out)
    }
}

/// Struct columns into one column per field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unnest {
    /// Struct columns.
    pub columns: Vec<String>,
    /// Name fields `<column><separator><field>` (else just `<field>`).
    #[serde(default)]
    pub separator: Option<String>,
}

impl Operation for Unnest {
    const SPEC: Spec = Spec::one("unnest", r#"{"input": h, "columns": ["point"], "separator": null}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.unnest(expr::selector(&self.columns), self.separator.as_deref().map(Into::into)))
    }
}

/// A first column counting rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithRowIndex {
    /// The column's name.
    #[serde(default = "index")]
    pub name: String,
    /// The first row's number.
    #[serde(default)]
    pub offset: u64,
}

fn index() -> String {
    "index".into()
}

impl Operation for WithRowIndex {
    const SPEC: Spec = Spec::one("with_row_index", r#"{"input": h, "name": "index", "offset": 0}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.with_row_index(self.name.as_str(), Some(idx("offset", self.offset)?)))
    }
}

/// The `k` rows with the largest keys (`top_k`) or the smallest (`bottom_k`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopK {
    /// Rows to keep.
    pub k: u64,
    /// Column names or native expressions.
    pub by: Vec<Key>,
    /// Flip the order, for all keys or per key.
    #[serde(default)]
    pub reverse: Flags,
}

impl TopK {
    fn plan(&self, lf: LazyFrame, largest: bool) -> Result<LazyFrame> {
        let by = expr::key_exprs("by", &self.by)?;
        let reverse = self.reverse.expand("reverse", by.len())?;
        // Polars' `top_k` flips the sort order itself: `reverse` is the sort's `descending`.
        let options = SortMultipleOptions::default().with_order_descending_multi(reverse).with_nulls_last(true);
        let k = idx("k", self.k)?;
        Ok(if largest { lf.top_k(k, by, options) } else { lf.bottom_k(k, by, options) })
    }
}

impl Operation for TopK {
    const SPEC: Spec = Spec::one("top_k", r#"{"input": h, "k": 3, "by": ["price"], "reverse": false}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        self.plan(lf, true)
    }
    fn rows(&self, rows: u64, _: &LazyFrame, _: &Context) -> Result<u64> {
        Ok(rows.min(self.k))
    }
}

/// The `k` rows with the smallest keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BottomK(pub TopK);

impl Operation for BottomK {
    const SPEC: Spec = Spec::one("bottom_k", r#"{"input": h, "k": 3, "by": ["price"], "reverse": false}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        self.0.plan(lf, false)
    }
    fn rows(&self, rows: u64, _: &LazyFrame, _: &Context) -> Result<u64> {
        Ok(rows.min(self.0.k))
    }
}

/// The rows in reverse order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reverse {}

impl Operation for Reverse {
    const SPEC: Spec = Spec::one("reverse", r#"{"input": h}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.reverse())
    }
}

/// Every `n`th row, starting at `offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatherEvery {
    /// The stride (at least 1).
    pub n: u64,
    /// The first row taken.
    #[serde(default)]
    pub offset: u64,
}

impl Operation for GatherEvery {
    const SPEC: Spec = Spec::one("gather_every", r#"{"input": h, "n": 2, "offset": 0}"#, false);
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        if self.n == 0 {
            return Err(Error::invalid("`n`: must be at least 1"));
        }
        let n = usize::try_from(self.n).map_err(|_| Error::invalid("`n`: too large"))?;
        let offset = usize::try_from(self.offset).map_err(|_| Error::invalid("`offset`: too large"))?;
        Ok(lf.select([all().as_expr().gather_every(n, offset)]))
    }
}
