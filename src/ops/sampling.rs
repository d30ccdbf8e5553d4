//! Sampling: random rows, reproducible once a seed is known.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Context, Inputs, Operation, Spec};
use crate::error::{Error, Result};

/// Random rows: `n` or `fraction`; without `seed` the result is new on every call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Rows to draw.
    #[serde(default)]
    pub n: Option<u64>,
    /// Or a share of the rows.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Draw with replacement.
    #[serde(default)]
    pub with_replacement: bool,
    /// Shuffle the drawn rows.
    #[serde(default)]
    pub shuffle: bool,
    /// The seed; drawn on arrival when missing, and kept in the result's lineage.
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Operation for Sample {
    const SPEC: Spec = Spec {
        name: "sample",
        example: r#"{"input": h, "n": 10 | "fraction": 0.1, "with_replacement": false, "shuffle": false, "seed": 42}"#,
        inputs: Inputs::One,
        streams: false,
    };
    fn apply(&self, lf: LazyFrame, _: &Context) -> Result<LazyFrame> {
        let df = lf.collect()?;
        let n = match (self.n, self.fraction) {
            (Some(n), None) => n as usize,
            (None, Some(f)) if f >= 0.0 => (df.height() as f64 * f).floor() as usize,
            _ => return Err(Error::invalid("`n`: give exactly one of `n` or a non-negative `fraction`")),
        };
        Ok(df.sample_n_literal(n, self.with_replacement, Some(self.shuffle), self.seed)?.lazy())
    }
    fn rows(&self, rows: u64, _: &LazyFrame, _: &Context) -> Result<u64> {
        Ok(match self.n {
            Some(n) if self.with_replacement => n,
            Some(n) => n.min(rows),
            None => rows,
        })
    }
    fn is_deterministic(&self) -> bool {
        self.seed.is_some()
    }
    fn seeded(&self, seed: u64) -> Option<Self> {
        self.seed.is_none().then(|| Sample { seed: Some(seed), ..self.clone() })
    }
}
