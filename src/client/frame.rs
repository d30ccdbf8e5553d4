//! The chaining API over Polars' own [`Expr`]: a [`RemoteFrame`] collects steps on the client
//! and runs them as one `pipeline` action, as the Python client does.
//!
//! ```text
//! let totals = client.frame(&up)
//!     .filter(col("qty").gt(lit(10)))
//!     .group_by([col("sym")])
//!     .agg([col("qty").sum().alias("total")])
//!     .collect()
//!     .await?;
//! ```
//!
//! Expressions travel as Polars' serde JSON (`{"expr": ...}`), which this crate's Polars writes
//! exactly as the worker's reads it.

use polars::prelude::{DataFrame, Expr};
use serde_json::{Value, json};
use tonic::Status;

use super::{Client, Handle};

/// A lazy chain of steps over a stored result.
#[derive(Clone)]
pub struct RemoteFrame<'c> {
    client: &'c Client,
    input: Handle,
    steps: Vec<Value>,
}

/// A pending `group_by`: [`GroupBy::agg`] makes it a step.
pub struct GroupBy<'c> {
    frame: RemoteFrame<'c>,
    by: Vec<Value>,
    maintain_order: bool,
}

/// `{"expr": <Polars JSON>}` for an expression.
fn native(e: &Expr) -> Value {
    json!({ "expr": serde_json::to_value(e).expect("Polars expressions serialise") })
}

fn natives(exprs: &[Expr]) -> Vec<Value> {
    exprs.iter().map(native).collect()
}

impl Client {
    /// A lazy frame over a stored result.
    pub fn frame(&self, input: &Handle) -> RemoteFrame<'_> {
        RemoteFrame { client: self, input: input.clone(), steps: Vec::new() }
    }
}

impl<'c> RemoteFrame<'c> {
    /// Any operation as a step: its name and body (without `input`).
    pub fn step(mut self, op: &str, body: Value) -> Self {
        let mut step = json!({ "op": op });
        if let (Value::Object(s), Value::Object(b)) = (&mut step, body) {
            s.extend(b);
        }
        self.steps.push(step);
        self
    }

    /// Rows where `predicate` holds.
    pub fn filter(self, predicate: Expr) -> Self {
        self.step("filter", json!({ "predicate": native(&predicate) }))
    }

    /// Projects expressions.
    pub fn select<E: AsRef<[Expr]>>(self, exprs: E) -> Self {
        self.step("select", json!({ "columns": natives(exprs.as_ref()) }))
    }

    /// Adds or replaces columns (each named by its alias or input column).
    pub fn with_columns<E: AsRef<[Expr]>>(self, exprs: E) -> Self {
        self.step("with_columns", json!({ "columns": natives(exprs.as_ref()) }))
    }

    /// Sorts by expressions, all ascending or all descending.
    pub fn sort<E: AsRef<[Expr]>>(self, by: E, descending: bool) -> Self {
        self.step("sort", json!({ "by": natives(by.as_ref()), "descending": descending }))
    }

    /// Groups by keys; aggregate with [`GroupBy::agg`].
    pub fn group_by<E: AsRef<[Expr]>>(self, by: E) -> GroupBy<'c> {
        GroupBy { by: natives(by.as_ref()), frame: self, maintain_order: false }
    }

    /// Groups by keys, in order of first appearance.
    pub fn group_by_stable<E: AsRef<[Expr]>>(self, by: E) -> GroupBy<'c> {
        GroupBy { by: natives(by.as_ref()), frame: self, maintain_order: true }
    }

    /// Joins a stored result on key expressions; `how` as in Polars (`inner`, `left`, ...).
    pub fn join<E: AsRef<[Expr]>>(self, right: &Handle, left_on: E, right_on: E, how: &str) -> Self {
        let body = json!({
            "right": right.handle, "left_on": natives(left_on.as_ref()),
            "right_on": natives(right_on.as_ref()), "how": how,
        });
        self.step("join", body)
    }

    /// The first `n` rows.
    pub fn head(self, n: u64) -> Self {
        self.step("head", json!({ "n": n }))
    }

    /// The steps so far, as a `pipeline` body.
    pub fn pipeline(&self) -> Value {
        json!({ "input": self.input.handle, "steps": self.steps })
    }

    /// Runs the steps as one `pipeline` action; the handle of a chain run before comes back
    /// without recomputing.
    pub async fn persist(self) -> Result<Handle, Status> {
        if self.steps.is_empty() {
            return Ok(self.input);
        }
        self.client.run("pipeline", &self.pipeline(), Some(&self.input.affinity)).await
    }

    /// Runs the steps and fetches the result as a Polars frame.
    pub async fn collect(self) -> Result<DataFrame, Status> {
        let client = self.client;
        let result = self.persist().await?;
        let batches = client.fetch(&result.handle, Some(&result.affinity)).await?;
        let Some(first) = batches.first() else { return Ok(DataFrame::empty()) };
        crate::convert::batches_to_frame(&first.schema(), &batches).map_err(|e| Status::internal(e.to_string()))
    }
}

impl<'c> GroupBy<'c> {
    /// Aggregates each group.
    pub fn agg<E: AsRef<[Expr]>>(self, aggs: E) -> RemoteFrame<'c> {
        let body = json!({ "by": self.by, "aggs": natives(aggs.as_ref()), "maintain_order": self.maintain_order });
        self.frame.step("group_by", body)
    }
}
