//! The one list of operations. The request parser, `ListActions` and the pipeline decoder all
//! read it; adding an operation is its struct (in its family's file) plus one line here.

use serde_json::{Map, Value};

use super::{Operation, Spec, Step, join, nulls, relational, reshape, sampling, timeseries};
use crate::error::{Error, Result};

/// One registered operation: its declaration and its decoder.
pub struct Entry {
    /// Name, example, inputs and engine choice.
    pub spec: Spec,
    decode: fn(Map<String, Value>) -> std::result::Result<Step, String>,
}

impl Entry {
    const fn of<T: Operation>() -> Entry {
        Entry { spec: T::SPEC, decode: decode_as::<T> }
    }
}

fn decode_as<T: Operation>(body: Map<String, Value>) -> std::result::Result<Step, String> {
    serde_path_to_error::deserialize::<_, T>(Value::Object(body)).map(Step::new).map_err(|e| {
        let path = e.path().to_string();
        if path == "." { e.into_inner().to_string() } else { format!("`{path}`: {}", e.into_inner()) }
    })
}

/// Every data operation, by family.
pub static OPERATIONS: &[Entry] = &[
    // relational
    Entry::of::<relational::Filter>(),
    Entry::of::<relational::Select>(),
    Entry::of::<relational::WithColumns>(),
    Entry::of::<relational::Sort>(),
    Entry::of::<relational::GroupBy>(),
    Entry::of::<relational::Head>(),
    Entry::of::<relational::Tail>(),
    Entry::of::<relational::Limit>(),
    Entry::of::<relational::Slice>(),
    Entry::of::<relational::Drop>(),
    Entry::of::<relational::Rename>(),
    Entry::of::<relational::Cast>(),
    Entry::of::<relational::Unique>(),
    // nulls
    Entry::of::<nulls::DropNulls>(),
    Entry::of::<nulls::DropNans>(),
    Entry::of::<nulls::FillNull>(),
    Entry::of::<nulls::FillNan>(),
    Entry::of::<nulls::Interpolate>(),
    // relational, continued
    Entry::of::<relational::Explode>(),
    Entry::of::<relational::Unnest>(),
    Entry::of::<relational::WithRowIndex>(),
    Entry::of::<relational::TopK>(),
    Entry::of::<relational::BottomK>(),
    Entry::of::<relational::Reverse>(),
    Entry::of::<relational::GatherEvery>(),
    // join
    Entry::of::<join::Join>(),
    Entry::of::<join::AsofJoin>(),
    Entry::of::<join::JoinWhere>(),
    Entry::of::<join::Concat>(),
    // reshape
    Entry::of::<reshape::Pivot>(),
    Entry::of::<reshape::Unpivot>(),
    Entry::of::<reshape::Describe>(),
    // time series
    Entry::of::<timeseries::Resample>(),
    Entry::of::<timeseries::GroupByRolling>(),
    Entry::of::<timeseries::Upsample>(),
    Entry::of::<timeseries::Rolling>(),
    Entry::of::<timeseries::Shift>(),
    Entry::of::<timeseries::Diff>(),
    Entry::of::<timeseries::PctChange>(),
    Entry::of::<timeseries::CumSum>(),
    Entry::of::<timeseries::Cumulative>(),
    // sampling
    Entry::of::<sampling::Sample>(),
];

/// The registered operation called `name`.
pub fn find(name: &str) -> Option<&'static Entry> {
    OPERATIONS.iter().find(|e| e.spec.name == name)
}

/// Decodes the body of operation `name` (without `op`).
pub fn decode(name: &str, body: Map<String, Value>) -> Result<Step> {
    let entry = find(name).ok_or_else(|| Error::invalid(format!("unknown operation `{name}`")))?;
    (entry.decode)(body).map_err(|e| Error::invalid(format!("`{name}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_examples_parse_as_far_as_they_are_json() {
        for (i, e) in OPERATIONS.iter().enumerate() {
            assert!(OPERATIONS[..i].iter().all(|o| o.spec.name != e.spec.name), "{} twice", e.spec.name);
            assert!(e.spec.example.starts_with('{'), "{}", e.spec.name);
        }
    }
}
