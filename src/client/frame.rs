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
//! A frame reads a stored result ([`Client::frame`]), a scan of the worker's data root
//! ([`Client::scan_parquet`] and the like) or a declared dataset ([`Client::dataset`]). A join's
//! other side and a concat's frames travel as sub-plans of the same request, so a tree of joins
//! over scans is one round trip and one stored result. Expressions travel as Polars' serde JSON
//! (`{"expr": ...}`), which this crate's Polars writes exactly as the worker's reads it.

use polars::prelude::{DataFrame, Expr};
use serde_json::{Value, json};
use tonic::Status;

use super::{Client, Handle};

/// A lazy chain of steps over a source.
#[derive(Clone)]
pub struct RemoteFrame<'c> {
    client: &'c Client,
    /// A handle string, `{"scan": ...}`, `{"dataset": ...}` or a sub-plan.
    source: Value,
    affinity: String,
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
        RemoteFrame { client: self, source: json!(input.handle), affinity: input.affinity.clone(), steps: Vec::new() }
    }

    /// A lazy frame over a source (a scan's or dataset's JSON), routed by a digest of it.
    fn over(&self, source: Value) -> RemoteFrame<'_> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(source.to_string().as_bytes());
        let affinity = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        RemoteFrame { client: self, source, affinity, steps: Vec::new() }
    }

    /// A lazy scan of files under the worker's data root: `format` is `parquet`, `ipc` or `csv`;
    /// `path` a file, directory or glob; `options` the scan's other fields
    /// (`{"hive_partitioning": true}`, `{"columns": [...]}`, `{"csv": {...}}`).
    pub fn scan(&self, format: &str, path: &str, options: Value) -> RemoteFrame<'_> {
        let mut spec = json!({ "format": format, "path": path });
        if let (Value::Object(s), Value::Object(o)) = (&mut spec, options) {
            s.extend(o);
        }
        self.over(json!({ "scan": spec }))
    }

    /// A lazy scan of Parquet files under the data root, hive partitions read as columns or not.
    pub fn scan_parquet(&self, path: &str, hive_partitioning: bool) -> RemoteFrame<'_> {
        self.scan("parquet", path, json!({ "hive_partitioning": hive_partitioning }))
    }

    /// A lazy frame over a dataset the operator declared.
    pub fn dataset(&self, name: &str) -> RemoteFrame<'_> {
        self.over(json!({ "dataset": name }))
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

    /// Joins another frame (its plan travels in this request) on key expressions; `how` as in
    /// Polars (`inner`, `left`, `semi`, ...).
    pub fn join<E: AsRef<[Expr]>>(self, right: &RemoteFrame<'_>, left_on: E, right_on: E, how: &str) -> Self {
        let body = json!({
            "right": right.tree(), "left_on": natives(left_on.as_ref()),
            "right_on": natives(right_on.as_ref()), "how": how,
        });
        self.step("join", body)
    }

    /// This frame with the others' rows appended; `how` as in Polars (`vertical`, `diagonal`, ...).
    pub fn concat(self, others: &[RemoteFrame<'_>], how: &str) -> Self {
        let inputs: Vec<Value> = others.iter().map(RemoteFrame::tree).collect();
        self.step("concat", json!({ "inputs": inputs, "how": how }))
    }

    /// Streams the result into files under the worker's data root: `sink` is the sink's JSON
    /// (`{"format": "parquet", "path": "out/sales", "partition_by": ["region"], "mode": "overwrite"}`).
    /// The answer lists the files, rows and bytes written.
    pub async fn sink(self, sink: Value) -> Result<Value, Status> {
        let mut body = self.pipeline();
        body["sink"] = sink;
        self.client.action("sink", &body, Some(&self.affinity)).await
    }

    /// This frame as another plan's source: its source, or a sub-plan.
    fn tree(&self) -> Value {
        if self.steps.is_empty() { self.source.clone() } else { self.pipeline() }
    }

    /// The first `n` rows.
    pub fn head(self, n: u64) -> Self {
        self.step("head", json!({ "n": n }))
    }

    /// The steps so far, as a `pipeline` body.
    pub fn pipeline(&self) -> Value {
        json!({ "input": self.source, "steps": self.steps })
    }

    /// Runs the plan as one `pipeline` action; the handle of a plan run before (over the same
    /// files) comes back without recomputing.
    pub async fn persist(self) -> Result<Handle, Status> {
        if let (true, Value::String(handle)) = (self.steps.is_empty(), &self.source) {
            return Ok(Handle {
                handle: handle.clone(),
                affinity: self.affinity.clone(),
                json: json!({ "handle": handle }),
            });
        }
        self.client.run("pipeline", &self.pipeline(), Some(&self.affinity)).await
    }

    /// The worker's optimised plan, with what each scan reads pushed into it.
    pub async fn explain(&self) -> Result<String, Status> {
        let answer = self.client.action("explain", &self.pipeline(), Some(&self.affinity)).await?;
        Ok(answer["plan"].as_str().unwrap_or_default().to_string())
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
