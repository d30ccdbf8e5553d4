//! Reshaping: long to wide (`pivot`), wide to long (`unpivot`), and a summary (`describe`).

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::expr;
use super::{Context, Inputs, Operation, Spec};
use crate::error::{Error, Result};

/// How `pivot` combines the values that land in one cell.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PivotAgg {
    /// The first value.
    First,
    /// The last value.
    Last,
    /// Their sum.
    Sum,
    /// Their mean.
    Mean,
    /// Their median.
    Median,
    /// The smallest.
    Min,
    /// The largest.
    Max,
    /// Non-null values.
    Count,
    /// Values.
    Len,
}

fn first() -> PivotAgg {
    PivotAgg::First
}

fn underscore() -> String {
    "_".into()
}

/// Long to wide.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pivot {
    /// Columns whose values become new columns.
    pub on: Vec<String>,
    /// Columns that stay as rows (the rest by default).
    #[serde(default)]
    pub index: Vec<String>,
    /// Columns whose values fill the cells (the rest by default).
    #[serde(default)]
    pub values: Vec<String>,
    /// How values in one cell combine.
    #[serde(default = "first")]
    pub agg: PivotAgg,
    /// Between parts of a new column's name.
    #[serde(default = "underscore")]
    pub separator: String,
}

impl Operation for Pivot {
    const SPEC: Spec = Spec {
        name: "pivot",
        example: r#"{"input": h, "on": ["sym"], "index": ["day"], "values": ["qty"], "agg": "first|last|sum|mean|median|min|max|count|len", "separator": "_"}"#,
        inputs: Inputs::One,
        streams: false,
    };
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        if self.on.is_empty() {
            return Err(Error::invalid("`on`: pivot needs at least one column"));
        }
        let agg = match self.agg {
            PivotAgg::First => element().first(),
            PivotAgg::Last => element().last(),
            PivotAgg::Sum => element().sum(),
            PivotAgg::Mean => element().mean(),
            PivotAgg::Median => element().median(),
            PivotAgg::Min => element().min(),
            PivotAgg::Max => element().max(),
            PivotAgg::Count => element().count(),
            PivotAgg::Len => element().len(),
        };
        let on = &self.on;
        // The output columns depend on the data: find the distinct `on` values first.
        let df = lf.collect()?;
        let on_columns =
            df.clone().lazy().select(expr::columns(on)).unique_stable(None, UniqueKeepStrategy::First).collect()?;
        let mut index = self.index.clone();
        let mut values = self.values.clone();
        let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        if values.is_empty() {
            values = names.iter().filter(|n| !on.contains(n) && !index.contains(n)).cloned().collect();
        } else if index.is_empty() {
            index = names.iter().filter(|n| !on.contains(n) && !values.contains(n)).cloned().collect();
        }
        Ok(df.lazy().pivot(
            expr::selector(on),
            std::sync::Arc::new(on_columns),
            expr::selector(&index),
            expr::selector(&values),
            agg,
            true,
            self.separator.as_str().into(),
            polars::frame::PivotColumnNaming::Auto,
        ))
    }
}

/// Wide to long.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unpivot {
    /// Columns that stay.
    #[serde(default)]
    pub index: Vec<String>,
    /// Columns turned into rows (the rest by default).
    #[serde(default)]
    pub on: Option<Vec<String>>,
    /// Name of the column holding the old column names.
    #[serde(default)]
    pub variable_name: Option<String>,
    /// Name of the column holding the values.
    #[serde(default)]
    pub value_name: Option<String>,
}

impl Operation for Unpivot {
    const SPEC: Spec = Spec {
        name: "unpivot",
        example: r#"{"input": h, "index": ["day"], "on": ["a", "b"], "variable_name": "variable", "value_name": "value"}"#,
        inputs: Inputs::One,
        streams: false,
    };
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(lf.unpivot(UnpivotArgsDSL {
            on: self.on.as_deref().map(expr::selector),
            index: expr::selector(&self.index),
            variable_name: self.variable_name.as_deref().map(Into::into),
            value_name: self.value_name.as_deref().map(Into::into),
        }))
    }
}

fn quartiles() -> Vec<f64> {
    vec![0.25, 0.5, 0.75]
}

/// Summary statistics per column.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Describe {
    /// Percentiles between 0 and 1.
    #[serde(default = "quartiles")]
    pub percentiles: Vec<f64>,
}

impl Operation for Describe {
    const SPEC: Spec = Spec {
        name: "describe",
        example: r#"{"input": h, "percentiles": [0.25, 0.5, 0.75]}"#,
        inputs: Inputs::One,
        streams: false,
    };
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        Ok(super::describe::describe(lf, &self.percentiles)?.lazy())
    }
}
