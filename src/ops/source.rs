//! What a plan reads: a stored result, a scan of the data root, a declared dataset, or another
//! plan. A pipeline's `input`, a join's `right` and a concat's `inputs` are each a [`Source`], so
//! a whole tree of joins over scans is one request, one lazy Polars plan and one stored result.
//!
//! On the wire a source is a handle string, `{"scan": {...}}`, `{"dataset": "name"}`, or a
//! sub-pipeline `{"input": <source>, "steps": [...]}`. Trees are bounded: at most
//! [`MAX_PLAN_DEPTH`] pipelines deep and [`MAX_LEAVES`] leaves.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::Pipeline;
use crate::error::{Error, Result};
use crate::handle::Handle;

/// A scan of files under the data root: a plain value; `data` lists and opens it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSpec {
    /// `parquet`, `ipc` or `csv`.
    pub format: Format,
    /// A file, a directory (every file under it) or a glob (`sales/**/*.parquet`), relative to
    /// the data root.
    pub path: String,
    /// Read `key=value` directories as columns. Unset: on for a directory, off otherwise (as
    /// Polars' `scan_parquet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hive_partitioning: Option<bool>,
    /// Only these columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Only the first n rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_rows: Option<u64>,
    /// CSV options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvSpec>,
}

/// How CSV files are parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSpec {
    /// The first line holds column names.
    #[serde(default = "yes")]
    pub has_header: bool,
    /// Field separator (one byte).
    #[serde(default = "comma")]
    pub separator: String,
    /// Strings read as null.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub null_values: Vec<String>,
    /// Column types, instead of inferring them: name -> Polars type (`i64`, `date`, `str`...).
    #[serde(default, skip_serializing_if = "indexmap::IndexMap::is_empty")]
    pub schema_overrides: indexmap::IndexMap<String, String>,
    /// Rows read to infer types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_schema_length: Option<usize>,
    /// Parse date-looking strings as dates.
    #[serde(default)]
    pub try_parse_dates: bool,
}

impl Default for CsvSpec {
    fn default() -> Self {
        CsvSpec {
            has_header: true,
            separator: comma(),
            null_values: Vec::new(),
            schema_overrides: indexmap::IndexMap::new(),
            infer_schema_length: None,
            try_parse_dates: false,
        }
    }
}

fn yes() -> bool {
    true
}

fn comma() -> String {
    ",".into()
}

/// Formats that can be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Comma-separated values.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Arrow IPC file.
    Ipc,
}

impl Format {
    /// The format's name, as in `read_<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Ipc => "ipc",
        }
    }
}

/// Pipelines nested in one request, the outermost included.
pub const MAX_PLAN_DEPTH: usize = 16;
/// Leaves (handles, scans, datasets) of one request.
pub const MAX_LEAVES: usize = 64;

/// A plan's input.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A stored result.
    Handle(Handle),
    /// Files under the data root.
    Scan(ScanSpec),
    /// A dataset the operator declared.
    Dataset(String),
    /// Another plan, run as part of this one.
    Plan(Box<Pipeline>),
}

impl From<Handle> for Source {
    fn from(h: Handle) -> Source {
        Source::Handle(h)
    }
}

impl Source {
    /// Whether it is read from the data root (a scan or a dataset).
    pub fn is_scan(&self) -> bool {
        matches!(self, Source::Scan(_) | Source::Dataset(_))
    }

    /// The key a resolved scan leaf is found under: its canonical JSON.
    pub fn key(&self) -> String {
        serde_json::to_string(self).expect("sources serialise")
    }

    /// Calls `f` on this source and every source under it, depth first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Source)) {
        f(self);
        if let Source::Plan(p) = self {
            p.walk(f);
        }
    }

    fn decode(value: Value) -> Result<Source> {
        match value {
            Value::String(s) => Ok(Source::Handle(Handle::parse(&s)?)),
            Value::Object(mut fields) if fields.len() == 1 && fields.contains_key("scan") => {
                let spec: ScanSpec = serde_json::from_value(fields.remove("scan").expect("present"))
                    .map_err(|e| Error::invalid(format!("`scan`: {e}")))?;
                spec.check()?;
                Ok(Source::Scan(spec))
            }
            Value::Object(fields) if fields.len() == 1 && fields.contains_key("dataset") => match &fields["dataset"] {
                Value::String(name) => Ok(Source::Dataset(name.clone())),
                _ => Err(Error::invalid("`dataset`: must be a dataset's name")),
            },
            Value::Object(fields) if fields.contains_key("input") => {
                let pipeline: Pipeline = serde_json::from_value(Value::Object(fields))
                    .map_err(|e| Error::invalid(format!("a sub-plan: {e}")))?;
                Ok(Source::Plan(Box::new(pipeline)))
            }
            _ => Err(Error::invalid(
                r#"a source is a handle, {"scan": {...}}, {"dataset": "name"} or {"input": <source>, "steps": [...]}"#,
            )),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Source::Handle(h) => h.serialize(s),
            Source::Scan(spec) => json!({ "scan": spec }).serialize(s),
            Source::Dataset(name) => {
                let mut fields = Map::new();
                fields.insert("dataset".into(), Value::String(name.clone()));
                fields.serialize(s)
            }
            Source::Plan(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Source::decode(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Refuses a tree past the nesting or leaf bounds.
pub fn check_tree(pipeline: &Pipeline) -> Result<()> {
    fn depth(p: &Pipeline) -> usize {
        let mut deepest = 0;
        p.for_each_child(&mut |s| {
            if let Source::Plan(sub) = s {
                deepest = deepest.max(depth(sub));
            }
        });
        1 + deepest
    }
    let d = depth(pipeline);
    if d > MAX_PLAN_DEPTH {
        return Err(Error::invalid(format!("the plan nests {d} pipelines deep; at most {MAX_PLAN_DEPTH}")));
    }
    let mut leaves = 0;
    pipeline.walk(&mut |s| {
        if !matches!(s, Source::Plan(_)) {
            leaves += 1;
        }
    });
    if leaves > MAX_LEAVES {
        return Err(Error::invalid(format!("the plan reads {leaves} sources; at most {MAX_LEAVES}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_and_bad_ones_are_named() {
        let h = Handle::random();
        for text in [
            format!(r#""{h}""#),
            r#"{"scan":{"format":"parquet","path":"s/*.parquet","hive_partitioning":true}}"#.to_string(),
            r#"{"dataset":"sales"}"#.to_string(),
            r#"{"input":{"dataset":"x"},"steps":[{"op":"head","n":2}]}"#.to_string(),
        ] {
            let source: Source = serde_json::from_str(&text).unwrap();
            let again: Source = serde_json::from_str(&serde_json::to_string(&source).unwrap()).unwrap();
            assert_eq!(source, again, "{text}");
        }
        for bad in [
            r#"{"scan":{"format":"parquet"}}"#,
            r#"{"dataset":1}"#,
            r#"{"what":1}"#,
            r#"{"scan":{"format":"xls","path":"a"}}"#,
        ] {
            let err = serde_json::from_str::<Source>(bad).unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad}");
        }
    }

    #[test]
    fn trees_are_bounded() {
        let mut source = json!({"dataset": "x"});
        for _ in 0..=MAX_PLAN_DEPTH {
            source = json!({"input": source, "steps": []});
        }
        let p: Pipeline = serde_json::from_value(source).unwrap();
        let err = check_tree(&p).unwrap_err();
        assert!(err.to_string().contains("deep"), "{err}");
        let wide = json!({"input": {"dataset": "x"}, "steps": [
            {"op": "concat", "inputs": vec![json!({"dataset": "y"}); MAX_LEAVES]}
        ]});
        let p: Pipeline = serde_json::from_value(wide).unwrap();
        assert!(check_tree(&p).unwrap_err().to_string().contains("sources"));
    }
}
