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
pub mod source;
/// What SQL text can cost, read from its tokens before a parser sees it: depth and expansion.
pub mod sqltext;
pub mod timeseries;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use polars::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use self::aggregate::HashAggregate;
pub use self::source::Source;
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

/// What a plan's leaves read, resolved before it is built: stored results by handle, and scans
/// by their [`Source::key`].
#[derive(Default, Clone)]
pub struct Leaves {
    /// Every handle the plan names.
    pub frames: HashMap<Handle, Input>,
    /// Every scan and dataset the plan names, opened.
    pub scans: HashMap<String, Input>,
}

impl Leaves {
    /// Stored results only.
    pub fn of_frames(frames: HashMap<Handle, Input>) -> Leaves {
        Leaves { frames, scans: HashMap::new() }
    }

    /// The most rows among the leaves ([`UNKNOWN_ROWS`] when a scan is among them).
    fn largest(&self) -> u64 {
        self.frames.values().chain(self.scans.values()).map(|f| f.rows).fold(0, u64::max)
    }
}

/// What a plan is built with: its leaves, and the limits.
pub struct Context<'a> {
    /// The leaves.
    pub leaves: &'a Leaves,
    /// The worker's limits.
    pub limits: &'a Limits,
}

impl Context<'_> {
    /// A source as a lazy plan: a leaf, or a sub-plan built here.
    pub fn source(&self, source: &Source) -> Result<Input> {
        match source {
            Source::Handle(h) => {
                self.leaves.frames.get(h).cloned().ok_or_else(|| Error::NotFound(format!("handle {h} not found")))
            }
            Source::Scan(_) | Source::Dataset(_) => self
                .leaves
                .scans
                .get(&source.key())
                .cloned()
                .ok_or_else(|| Error::invalid("this request reads stored results only, not scans or datasets")),
            Source::Plan(p) => {
                let input = self.source(&p.input)?;
                let (lf, rows) = build_rows(input, &p.steps, self)?;
                Ok(Input { lf, rows })
            }
        }
    }
}

/// The row count of a leaf that is not known before the plan runs (a scan), and of what is
/// built over it: such plans skip the checks that need a count before they run (a join's matched
/// pairs), and their result's shape is checked once it is made.
pub const UNKNOWN_ROWS: u64 = u64::MAX;

/// A frame transform with a typed body.
pub trait Operation: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static {
    /// Name, example, inputs and engine choice.
    const SPEC: Spec;

    /// Adds the operation to the plan `lf`.
    fn apply(&self, lf: LazyFrame, cx: &Context) -> Result<LazyFrame>;

    /// Other sources it reads (a join's other side, a concat's inputs).
    fn sources(&self) -> Vec<&Source> {
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
    fn sources(&self) -> Vec<&Source>;
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
    fn sources(&self) -> Vec<&Source> {
        Operation::sources(self)
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

    /// Other sources this step reads.
    pub fn sources(&self) -> Vec<&Source> {
        self.0.sources()
    }

    /// Every handle this step reads, sub-plans' included.
    pub fn referenced_handles(&self) -> Vec<Handle> {
        let mut all = Vec::new();
        for source in self.sources() {
            source.walk(&mut |s| {
                if let Source::Handle(h) = s {
                    all.push(h.clone());
                }
            });
        }
        all
    }

    /// Whether any expression in this step calls a function that can make values much larger
    /// than its arguments, or holds a long string literal ([`crate::ops::sqltext::expands`]).
    pub fn expands(&self) -> bool {
        fn any(value: &Value) -> bool {
            match value {
                Value::String(s) => crate::ops::sqltext::expands(s),
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

    /// Whether the streaming engine runs it, and the sub-plans it reads.
    fn streams(&self) -> bool {
        self.0.spec().streams
            && self.sources().iter().all(|s| match s {
                Source::Plan(p) => p.streams(),
                _ => true,
            })
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
    /// What the steps run over.
    pub input: Source,
    /// The steps, applied in order.
    pub steps: Vec<Step>,
}

impl Pipeline {
    /// A pipeline over a stored result.
    pub fn over(input: Handle, steps: Vec<Step>) -> Pipeline {
        Pipeline { input: Source::Handle(input), steps }
    }

    /// Calls `f` on the sources this pipeline reads directly: its input, then its steps'.
    pub fn for_each_child<'a>(&'a self, f: &mut dyn FnMut(&'a Source)) {
        f(&self.input);
        for step in &self.steps {
            for source in step.sources() {
                f(source);
            }
        }
    }

    /// Calls `f` on every source in the tree, depth first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Source)) {
        self.for_each_child(&mut |s| s.walk(f));
    }

    /// Every handle the tree reads, without repeats, in the order met.
    pub fn handles(&self) -> Vec<Handle> {
        let mut all: Vec<Handle> = Vec::new();
        self.walk(&mut |s| {
            if let Source::Handle(h) = s
                && !all.contains(h)
            {
                all.push(h.clone());
            }
        });
        all
    }

    /// Every scan and dataset leaf of the tree, without repeats.
    pub fn scans(&self) -> Vec<&Source> {
        let mut all: Vec<&Source> = Vec::new();
        self.walk(&mut |s| {
            if s.is_scan() && !all.contains(&s) {
                all.push(s);
            }
        });
        all
    }

    /// The stored result it runs over, if its input is one.
    pub fn input_handle(&self) -> Option<&Handle> {
        match &self.input {
            Source::Handle(h) => Some(h),
            _ => None,
        }
    }

    fn streams(&self) -> bool {
        self.steps.iter().all(Step::streams)
            && match &self.input {
                Source::Plan(p) => p.streams(),
                _ => true,
            }
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

/// A pipeline's whole tree as one lazy plan, for a sink to stream.
pub fn plan(pipeline: &Pipeline, leaves: &Leaves, limits: &Limits) -> Result<LazyFrame> {
    let cx = Context { leaves, limits };
    let input = cx.source(&pipeline.input)?;
    Ok(build_rows(input, &pipeline.steps, &cx)?.0)
}

/// Runs a pipeline over its resolved leaves and collects the result.
pub fn run(pipeline: &Pipeline, leaves: &Leaves, limits: &Limits) -> Result<DataFrame> {
    let input = Context { leaves, limits }.source(&pipeline.input)?;
    let streams = pipeline.streams();
    run_over(input, &pipeline.steps, leaves, limits, streams)
}

/// Runs steps over `input` (a pipeline's input, or a frame streamed in), reading other sources
/// from `leaves`, and collects the result.
pub fn run_over(input: Input, steps: &[Step], leaves: &Leaves, limits: &Limits, streams: bool) -> Result<DataFrame> {
    let rows = leaves.largest().max(input.rows);
    if steps.iter().any(Step::expands) && rows != UNKNOWN_ROWS {
        probe(&input, steps, leaves, limits, rows)?;
    }
    if let Some((frame, aggregate)) = hash_aggregate(&input, steps, rows)?
        && let Some(out) = aggregate.run(frame, limits.max_sql_memory_bytes)?
    {
        return Ok(out);
    }
    let plan = build(input, steps, leaves, limits)?;
    // The streaming engine runs a plan in morsels over all cores without materialising each
    // intermediate column: about 4x faster than the in-memory engine on a 10-step pipeline over
    // 10M rows. It is used for the relational steps only: where Polars 0.55 itself panics (some
    // resample and unpivot inputs), the in-memory engine turns the panic into an error while
    // the streaming engine can stall. Small inputs skip it: setting up its pipeline costs more
    // than a filter over a few thousand rows.
    // Scans have no row count before they run, and are read on the streaming engine.
    let streams = rows >= STREAMING_MIN_ROWS && streams && steps.iter().all(Step::streams);
    let engine = if streams { Engine::Streaming } else { Engine::InMemory };
    Ok(plan.collect_with_engine(engine)?.unwrap_single())
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

/// What runs a pipeline: DataFusion's plan for a group_by it answers (see [`aggregate`]),
/// otherwise Polars' optimised plan, with what was pushed into each scan.
pub fn explain(pipeline: &Pipeline, leaves: &Leaves, limits: &Limits) -> Result<String> {
    let input = Context { leaves, limits }.source(&pipeline.input)?;
    explain_over(input, &pipeline.steps, leaves, limits)
}

/// [`explain`] of steps over `input`.
pub fn explain_over(input: Input, steps: &[Step], leaves: &Leaves, limits: &Limits) -> Result<String> {
    let rows = leaves.largest().max(input.rows);
    if let Some((frame, aggregate)) = hash_aggregate(&input, steps, rows)? {
        return aggregate.describe(frame);
    }
    Ok(build(input, steps, leaves, limits)?.describe_optimized_plan()?)
}

/// Runs `steps` over the input's first row and refuses them if, at that size per row, a result
/// of `rows` rows would pass the byte limit (see [`crate::ops::sqltext::expands`]). A first row the
/// steps filter out tells nothing, and the steps then run unprobed.
fn probe(input: &Input, steps: &[Step], leaves: &Leaves, limits: &Limits, rows: u64) -> Result<()> {
    let first = Input { lf: input.lf.clone().slice(0, 1), rows: input.rows.min(1) };
    let out = build(first, steps, leaves, limits)?.collect()?;
    if out.height() > 0 {
        let per_row = out.estimated_size() as u64 / out.height() as u64;
        limits.check_bytes(per_row.saturating_mul(rows.max(1)), true)?;
    }
    Ok(())
}

/// Builds the lazy plan of `steps` over `input` (eager where Polars needs data to plan, as pivot).
pub fn build(input: Input, steps: &[Step], leaves: &Leaves, limits: &Limits) -> Result<LazyFrame> {
    Ok(build_rows(input, steps, &Context { leaves, limits })?.0)
}

/// [`build`], with an upper bound on the rows flowing through (to refuse joins before they run).
fn build_rows(input: Input, steps: &[Step], cx: &Context) -> Result<(LazyFrame, u64)> {
    let mut rows = input.rows;
    let mut lf = input.lf;
    for step in steps {
        rows = step.0.rows(rows, &lf, cx)?;
        lf = step.0.apply(lf, cx)?;
    }
    Ok((lf, rows))
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
