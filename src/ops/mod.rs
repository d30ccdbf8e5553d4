//! Polars operations: their typed JSON specs and how each becomes part of a lazy plan.
//!
//! Every data operation is a struct implementing [`Operation`]: its serde-typed body, and once,
//! next to it, its [`Spec`] (name, example, how a DoAction names its inputs, whether the
//! streaming engine runs it), its row bound and how it applies to a lazy frame. The operations
//! live by family ([`relational`], [`nulls`], [`join`], [`reshape`], [`timeseries`], [`sampling`]) and are
//! listed once in [`registry`], from which the request parser, `ListActions` and the
//! clients' action names derive. Adding an operation is one struct and one registration.
//!
//! A [`Step`] is any registered operation behind one type. A single DoAction is a one-step
//! [`Pipeline`]; the `pipeline` action chains many into one lazy Polars plan. Nothing here does
//! I/O: inputs arrive as frames, the result leaves as a frame. One shape leaves Polars: a large
//! group_by that DataFusion answers as Polars does runs on DataFusion's hash aggregation
//! ([`aggregate`]), driven on the caller's tokio runtime.

pub mod aggregate;
mod describe;
pub mod expr;
pub mod join;
pub mod nulls;
pub mod registry;
pub mod relational;
pub mod reshape;
pub mod sampling;
pub mod timeseries;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use polars::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use self::aggregate::HashAggregate;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::limits::Limits;

/// How a DoAction body names an operation's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inputs {
    /// `input`: one handle.
    One,
    /// `left` (the frame) and `right` (a handle the step reads).
    Pair,
    /// `inputs`: the first is the frame, the rest are the step's `inputs`.
    Many,
}

/// What an operation declares once, next to its body.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The DoAction type and the pipeline step's `op`.
    pub name: &'static str,
    /// An example body, shown by `ListActions`.
    pub example: &'static str,
    /// How a DoAction names the inputs.
    pub inputs: Inputs,
    /// Whether the streaming engine runs it (see [`run`]).
    pub streams: bool,
}

impl Spec {
    /// The spec of an operation over one `input`.
    pub const fn one(name: &'static str, example: &'static str, streams: bool) -> Spec {
        Spec { name, example, inputs: Inputs::One, streams }
    }
}

/// The frames a plan may read besides its input, and the limits it is built under.
pub struct Context<'a> {
    /// Every handle the pipeline names.
    pub frames: &'a HashMap<Handle, Input>,
    /// The worker's limits.
    pub limits: &'a Limits,
}

impl Context<'_> {
    /// A frame the pipeline names.
    pub fn frame(&self, h: &Handle) -> Result<&Input> {
        self.frames.get(h).ok_or_else(|| Error::NotFound(format!("handle {h} not found")))
    }
}

/// A frame transform with a typed body.
pub trait Operation: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static {
    /// Name, example, inputs and engine choice.
    const SPEC: Spec;

    /// Adds the operation to the plan `lf`.
    fn apply(&self, lf: LazyFrame, cx: &Context) -> Result<LazyFrame>;

    /// Other handles it reads.
    fn handles(&self) -> Vec<Handle> {
        Vec::new()
    }

    /// An upper bound on the rows it makes from `rows` rows of `lf`, refusing what would pass a
    /// limit before anything runs.
    fn rows(&self, rows: u64, _lf: &LazyFrame, _cx: &Context) -> Result<u64> {
        Ok(rows)
    }

    /// Whether the same inputs always give the same result.
    fn is_deterministic(&self) -> bool {
        true
    }

    /// The operation with `seed` drawn for it, if it draws seeds (a sample without one).
    fn seeded(&self, _seed: u64) -> Option<Self> {
        None
    }

    /// The operation over a frame of `schema` as a hash aggregation that DataFusion answers as
    /// Polars does, if it is one (see [`aggregate`]).
    fn hash_aggregate(&self, _schema: &Schema) -> Result<Option<HashAggregate>> {
        Ok(None)
    }
}

/// The object-safe face of [`Operation`], so that steps of any type chain.
trait DynOperation: Send + Sync {
    fn spec(&self) -> Spec;
    fn body(&self) -> Value;
    fn apply(&self, lf: LazyFrame, cx: &Context) -> Result<LazyFrame>;
    fn handles(&self) -> Vec<Handle>;
    fn rows(&self, rows: u64, lf: &LazyFrame, cx: &Context) -> Result<u64>;
    fn is_deterministic(&self) -> bool;
    fn seeded(&self, seed: u64) -> Option<Step>;
    fn hash_aggregate(&self, schema: &Schema) -> Result<Option<HashAggregate>>;
}

impl<T: Operation> DynOperation for T {
    fn spec(&self) -> Spec {
        T::SPEC
    }
    fn body(&self) -> Value {
        serde_json::to_value(self).expect("operation bodies serialise")
    }
    fn apply(&self, lf: LazyFrame, cx: &Context) -> Result<LazyFrame> {
        Operation::apply(self, lf, cx)
    }
    fn handles(&self) -> Vec<Handle> {
        Operation::handles(self)
    }
    fn rows(&self, rows: u64, lf: &LazyFrame, cx: &Context) -> Result<u64> {
        Operation::rows(self, rows, lf, cx)
    }
    fn is_deterministic(&self) -> bool {
        Operation::is_deterministic(self)
    }
    fn seeded(&self, seed: u64) -> Option<Step> {
        Operation::seeded(self, seed).map(Step::new)
    }
    fn hash_aggregate(&self, schema: &Schema) -> Result<Option<HashAggregate>> {
        Operation::hash_aggregate(self, schema)
    }
}

/// One registered operation, of any type: `{"op": name, ...body}` on the wire.
#[derive(Clone)]
pub struct Step(Arc<dyn DynOperation>);

impl Step {
    /// Wraps a typed operation.
    pub fn new<T: Operation>(op: T) -> Step {
        Step(Arc::new(op))
    }

    /// Decodes `{"op": ..., ...}`.
    pub fn from_json(value: Value) -> Result<Step> {
        let Value::Object(mut fields) = value else {
            return Err(Error::invalid("a step must be a JSON object"));
        };
        let op = match fields.shift_remove("op") {
            Some(Value::String(op)) => op,
            _ => return Err(Error::invalid("a step needs a string field `op`")),
        };
        registry::decode(&op, fields)
    }

    /// The operation name, as used for DoAction types and pipeline `op` fields.
    pub fn name(&self) -> &'static str {
        self.0.spec().name
    }

    /// What the operation declares.
    pub fn spec(&self) -> Spec {
        self.0.spec()
    }

    /// The body, without `op`.
    pub fn body(&self) -> Value {
        self.0.body()
    }

    /// Other handles this step reads.
    pub fn referenced_handles(&self) -> Vec<Handle> {
        self.0.handles()
    }

    /// Whether any expression in this step calls a function that can make values much larger
    /// than its arguments, or holds a long string literal ([`crate::sqltext::expands`]).
    pub fn expands(&self) -> bool {
        fn any(value: &Value) -> bool {
            match value {
                Value::String(s) => crate::sqltext::expands(s),
                Value::Array(items) => items.iter().any(any),
                Value::Object(fields) => match fields.get(expr::NATIVE_FIELD) {
                    Some(native) if fields.len() == 1 => expr::native::expands(native),
                    _ => fields.values().any(any),
                },
                _ => false,
            }
        }
        any(&self.body())
    }

    /// Whether the same inputs always give the same result. `sample` without a seed does not.
    pub fn is_deterministic(&self) -> bool {
        self.0.is_deterministic()
    }

    /// Draws a seed for a step that needs one, so that its result can be reproduced.
    pub fn draw_seed(&mut self, seed: u64) {
        if let Some(seeded) = self.0.seeded(seed) {
            *self = seeded;
        }
    }

    fn streams(&self) -> bool {
        self.0.spec().streams
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut fields = Map::new();
        fields.insert("op".into(), Value::String(self.name().into()));
        if let Value::Object(body) = self.body() {
            fields.extend(body);
        }
        Value::Object(fields).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Step::from_json(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl PartialEq for Step {
    fn eq(&self, other: &Step) -> bool {
        self.name() == other.name() && self.body() == other.body()
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

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
    fn expand(&self, param: &str, n: usize) -> Result<Vec<bool>> {
        match self {
            Flags::One(b) => Ok(vec![*b; n]),
            Flags::Many(v) if v.len() == n => Ok(v.clone()),
            Flags::Many(v) => Err(Error::invalid(format!("`{param}`: {} flags for {n} columns", v.len()))),
        }
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

impl Input {
    /// The frame itself, when the input is one in memory rather than a scan of a stored file.
    fn frame(&self) -> Option<&DataFrame> {
        match &self.lf.logical_plan {
            DslPlan::DataFrameScan { df, .. } => Some(df),
            _ => None,
        }
    }
}

impl From<DataFrame> for Input {
    fn from(df: DataFrame) -> Input {
        Input { rows: df.height() as u64, lf: df.lazy() }
    }
}

/// Inputs smaller than this run on the in-memory engine (see [`run`]).
const STREAMING_MIN_ROWS: u64 = 100_000;

/// Runs steps over `input`, reading referenced handles from `frames`, and collects the result.
pub fn run(input: Input, steps: &[Step], frames: &HashMap<Handle, Input>, limits: &Limits) -> Result<DataFrame> {
    let rows = largest(&input, frames);
    if steps.iter().any(Step::expands) {
        probe(&input, steps, frames, limits, rows)?;
    }
    if let Some((frame, aggregate)) = hash_aggregate(&input, steps, rows)? {
        if let Some(out) = aggregate.run(frame, limits.max_sql_memory_bytes)? {
            return Ok(out);
        }
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

/// The most rows among the input and the other frames a pipeline reads: what decides the engine.
fn largest(input: &Input, frames: &HashMap<Handle, Input>) -> u64 {
    frames.values().map(|f| f.rows).fold(input.rows, u64::max)
}

/// The steps as a group_by that DataFusion runs, if they are one (see [`aggregate`]): one step over
/// a frame in memory. Its hash aggregation takes about half the CPU of Polars' grouping table.
/// Small inputs skip it, as they skip the streaming engine.
fn hash_aggregate<'a>(input: &'a Input, steps: &[Step], rows: u64) -> Result<Option<(&'a DataFrame, HashAggregate)>> {
    match (input.frame(), steps) {
        (Some(frame), [step]) if rows >= STREAMING_MIN_ROWS => {
            Ok(step.0.hash_aggregate(frame.schema())?.map(|aggregate| (frame, aggregate)))
        }
        _ => Ok(None),
    }
}

/// What runs `steps` over `input`: DataFusion's plan for a group_by it answers (see
/// [`aggregate`]), otherwise Polars' optimised plan.
pub fn explain(input: Input, steps: &[Step], frames: &HashMap<Handle, Input>, limits: &Limits) -> Result<String> {
    let rows = largest(&input, frames);
    if let Some((frame, aggregate)) = hash_aggregate(&input, steps, rows)? {
        return aggregate.describe(frame);
    }
    Ok(build(input, steps, frames, limits)?.describe_optimized_plan()?)
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
pub fn build(input: Input, steps: &[Step], frames: &HashMap<Handle, Input>, limits: &Limits) -> Result<LazyFrame> {
    let cx = Context { frames, limits };
    // An upper bound on the rows flowing through, to refuse joins before they run.
    let mut rows = input.rows;
    let mut lf = input.lf;
    for step in steps {
        rows = step.0.rows(rows, &lf, &cx)?;
        lf = step.0.apply(lf, &cx)?;
    }
    Ok(lf)
}

/// The named columns, or all of them.
fn columns_or_all(lf: &mut LazyFrame, columns: &Option<Vec<String>>) -> Result<Vec<String>> {
    match columns {
        Some(c) => Ok(c.clone()),
        None => Ok(lf.collect_schema()?.iter_names().map(|n| n.to_string()).collect()),
    }
}

/// Converts a row count from a request to Polars' index type.
fn idx(param: &str, n: u64) -> Result<IdxSize> {
    IdxSize::try_from(n).map_err(|_| Error::invalid(format!("`{param}`: {n} is too large")))
}

/// `true`, for `#[serde(default = ...)]`.
fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests;
