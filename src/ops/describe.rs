//! `describe`: summary statistics per column, one row per statistic.
//!
//! Numeric and boolean columns get count, null_count, mean, std, min, the requested percentiles
//! and max as f64; other columns get count and null_count, and null elsewhere.

use polars::prelude::*;

use crate::error::{Error, Result};

pub fn describe(mut lf: LazyFrame, percentiles: &[f64]) -> Result<DataFrame> {
    if let Some(p) = percentiles.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(Error::invalid(format!("`percentiles`: {p} is not between 0 and 1")));
    }
    let schema = lf.collect_schema()?;
    let mut stats: Vec<String> = vec!["count".into(), "null_count".into(), "mean".into(), "std".into(), "min".into()];
    stats.extend(percentiles.iter().map(|p| format!("{}%", p * 100.0)));
    stats.push("max".into());

    let mut exprs = Vec::new();
    for (i, (name, dtype)) in schema.iter().enumerate() {
        let c = col(name.clone());
        let numeric = dtype.is_primitive_numeric() || dtype.is_bool();
        let x = c.clone().cast(DataType::Float64);
        let mut column: Vec<Expr> =
            vec![c.clone().count().cast(DataType::Float64), c.clone().null_count().cast(DataType::Float64)];
        if numeric {
            column.push(x.clone().mean());
            column.push(x.clone().std(1));
            column.push(x.clone().min());
            for p in percentiles {
                column.push(x.clone().quantile(lit(*p), QuantileMethod::Nearest));
            }
            column.push(x.max());
        } else {
            column.extend((2..stats.len()).map(|_| lit(NULL).cast(DataType::Float64)));
        }
        exprs.extend(column.into_iter().enumerate().map(|(j, e)| e.alias(format!("{i}:{j}").as_str())));
    }
    let row = lf.select(exprs).collect()?;
    let mut columns = vec![Column::new("statistic".into(), stats.clone())];
    for (i, (name, _)) in schema.iter().enumerate() {
        let values = (0..stats.len())
            .map(|j| {
                let v = row.column(&format!("{i}:{j}"))?.get(0)?;
                Ok(v.extract::<f64>())
            })
            .collect::<Result<Vec<Option<f64>>>>()?;
        columns.push(Column::new(name.clone(), values));
    }
    Ok(DataFrame::new(stats.len(), columns)?)
}
