//! Requests: a DoAction's operation name and JSON body, or a command descriptor's JSON, parsed
//! into a typed [`Request`] the engine executes. Parsing refuses unknown operations and fields,
//! and validates every handle, before any work starts.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::data::files::{Format, ReadSpec, WriteSpec};
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::ops::expr::native;
use crate::ops::{Inputs, Pipeline, registry};

/// Action names that are not data operations.
pub mod actions {
    /// Run several steps as one plan.
    pub const PIPELINE: &str = "pipeline";
    /// A result's column names and types.
    pub const SCHEMA: &str = "schema";
    /// A result's rows and columns.
    pub const SHAPE: &str = "shape";
    /// The optimised plan of a pipeline.
    pub const EXPLAIN: &str = "explain";
    /// Exempt a result from expiry.
    pub const PIN: &str = "pin";
    /// Let a pinned result expire again.
    pub const UNPIN: &str = "unpin";
    /// Delete a result.
    pub const DROP_HANDLE: &str = "drop_handle";
    /// Give a result a name: a table for Flight SQL.
    pub const NAME: &str = "name";
    /// Read CSV from the data root.
    pub const READ_CSV: &str = "read_csv";
    /// Read Parquet from the data root.
    pub const READ_PARQUET: &str = "read_parquet";
    /// Read an Arrow IPC file from the data root.
    pub const READ_IPC: &str = "read_ipc";
    /// Write a result as CSV under the data root.
    pub const WRITE_CSV: &str = "write_csv";
    /// Write a result as Parquet under the data root.
    pub const WRITE_PARQUET: &str = "write_parquet";
    /// Write a result as an Arrow IPC file under the data root.
    pub const WRITE_IPC: &str = "write_ipc";
    /// Run a pipeline into files under the data root.
    pub const SINK: &str = "sink";
}

/// A parsed request.
#[derive(Debug, Clone)]
pub enum Request {
    /// Steps over an input, persisted as a new result.
    Transform {
        /// The action's name (the pipeline's last step, or `pipeline`).
        op: String,
        /// The input and its steps.
        pipeline: Pipeline,
    },
    /// A file read into a new result.
    Read {
        /// The file's format.
        format: Format,
        /// Which file, and how to read it.
        spec: ReadSpec,
    },
    /// A result written to a file.
    Write {
        /// The file's format.
        format: Format,
        /// Which result, and where.
        spec: WriteSpec,
    },
    /// A pipeline streamed into files under the data root.
    Sink {
        /// The plan whose rows are written.
        pipeline: Pipeline,
        /// Where and how.
        sink: crate::data::sink::SinkSpec,
    },
    /// Column names and types.
    Schema {
        /// The result.
        input: Handle,
    },
    /// Rows and columns.
    Shape {
        /// The result.
        input: Handle,
    },
    /// The optimised plan.
    Explain {
        /// The plan to explain.
        pipeline: Pipeline,
    },
    /// Pin or unpin.
    Pin {
        /// The result.
        handle: Handle,
        /// Pinned (kept past its TTL) or not.
        pinned: bool,
    },
    /// Delete.
    DropHandle {
        /// The result.
        handle: Handle,
    },
    /// Bind a dataset name to a result.
    Name {
        /// The result.
        handle: Handle,
        /// The dataset name.
        name: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandleArg {
    handle: Handle,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputArg {
    input: Handle,
}

fn from_value<T: serde::de::DeserializeOwned>(op: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::invalid(format!("`{op}`: {e}")))
}

fn from_map<T: serde::de::DeserializeOwned>(op: &str, obj: serde_json::Map<String, Value>) -> Result<T> {
    from_value(op, Value::Object(obj))
}

impl Request {
    /// Parses a DoAction: the operation name and its JSON body.
    pub fn parse(op: &str, body: &[u8]) -> Result<Request> {
        let obj = body_object(op, body)?;
        use actions::*;
        Ok(match op {
            PIPELINE => Request::Transform { op: op.to_string(), pipeline: tree(op, obj)? },
            EXPLAIN => Request::Explain { pipeline: tree(op, obj)? },
            SINK => {
                let mut obj = obj;
                let sink = match obj.remove("sink") {
                    Some(v) => from_value(op, v)?,
                    None => return Err(Error::invalid("`sink`: missing field `sink`")),
                };
                Request::Sink { pipeline: tree(op, obj)?, sink }
            }
            SCHEMA => Request::Schema { input: from_map::<InputArg>(op, obj)?.input },
            SHAPE => Request::Shape { input: from_map::<InputArg>(op, obj)?.input },
            PIN | UNPIN => Request::Pin { handle: from_map::<HandleArg>(op, obj)?.handle, pinned: op == PIN },
            NAME => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct NameArg {
                    handle: Handle,
                    name: String,
                }
                let arg: NameArg = from_map(op, obj)?;
                crate::engine::names::check(&arg.name)?;
                Request::Name { handle: arg.handle, name: arg.name }
            }
            DROP_HANDLE => Request::DropHandle { handle: from_map::<HandleArg>(op, obj)?.handle },
            READ_CSV => Request::Read { format: Format::Csv, spec: from_map(op, obj)? },
            READ_PARQUET => Request::Read { format: Format::Parquet, spec: from_map(op, obj)? },
            READ_IPC => Request::Read { format: Format::Ipc, spec: from_map(op, obj)? },
            WRITE_CSV => Request::Write { format: Format::Csv, spec: from_map(op, obj)? },
            WRITE_PARQUET => Request::Write { format: Format::Parquet, spec: from_map(op, obj)? },
            WRITE_IPC => Request::Write { format: Format::Ipc, spec: from_map(op, obj)? },
            _ => operation(op, obj)?,
        })
    }

    /// Parses a command descriptor: a JSON object whose `op` names the operation.
    pub fn parse_command(cmd: &[u8]) -> Result<Request> {
        let value: Value =
            serde_json::from_slice(cmd).map_err(|e| Error::invalid(format!("command is not valid JSON: {e}")))?;
        let Value::Object(mut obj) = value else {
            return Err(Error::invalid("command must be a JSON object"));
        };
        let op = match obj.remove("op") {
            Some(Value::String(op)) => op,
            _ => return Err(Error::invalid("command: missing string field `op`")),
        };
        Request::parse(&op, &serde_json::to_vec(&Value::Object(obj)).expect("json"))
    }
}

/// A DoAction's body as a JSON object (an empty body is `{}`), within the nesting limit.
fn body_object(op: &str, body: &[u8]) -> Result<serde_json::Map<String, Value>> {
    // serde_json refuses deeper nesting with a message about recursion; say what is refused.
    if native::json_depth(body) > native::MAX_JSON_DEPTH {
        return Err(Error::invalid(format!(
            "`{op}`: the body nests deeper than {} levels (an expression nested too deep)",
            native::MAX_JSON_DEPTH
        )));
    }
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| Error::invalid(format!("`{op}`: body is not valid JSON: {e}")))?
    };
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(Error::invalid(format!("`{op}`: body must be a JSON object"))),
    }
}

/// A registered data operation: its input handles taken from the body as its spec says, the
/// rest decoded as its step.
fn operation(op: &str, mut obj: serde_json::Map<String, Value>) -> Result<Request> {
    let entry = registry::find(op).ok_or_else(|| Error::invalid(format!("unknown operation `{op}`")))?;
    let mut take_handle = |key: &str| -> Result<Handle> {
        match obj.remove(key) {
            Some(Value::String(s)) => Handle::parse(&s),
            Some(_) => Err(Error::invalid(format!("`{key}`: must be a handle string"))),
            None => Err(Error::invalid(format!("`{op}`: missing field `{key}`"))),
        }
    };
    let input = match entry.spec.inputs {
        Inputs::Pair => take_handle("left")?,
        Inputs::One => take_handle("input")?,
        Inputs::Many => {
            let mut inputs: Vec<Handle> = match obj.remove("inputs") {
                Some(v) => from_value(op, v)?,
                None => return Err(Error::invalid(format!("`{op}`: missing field `inputs`"))),
            };
            if inputs.is_empty() {
                return Err(Error::invalid(format!("`inputs`: {op} needs at least one handle")));
            }
            let first = inputs.remove(0);
            obj.insert("inputs".into(), serde_json::to_value(inputs).expect("handles"));
            first
        }
    };
    let step = registry::decode(op, obj)?;
    Ok(Request::Transform { op: op.to_string(), pipeline: Pipeline::over(input, vec![step]) })
}

/// A pipeline body: a tree of sources and steps, within its bounds.
fn tree(op: &str, obj: serde_json::Map<String, Value>) -> Result<Pipeline> {
    let pipeline: Pipeline = from_map(op, obj)?;
    crate::ops::source::check_tree(&pipeline)?;
    Ok(pipeline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Step;

    #[test]
    fn actions_parse_into_requests() {
        let h = Handle::random();
        let body = format!(r#"{{"input": "{h}", "predicate": "a > 1"}}"#);
        match Request::parse("filter", body.as_bytes()).unwrap() {
            Request::Transform { pipeline, .. } => {
                assert_eq!(pipeline.input, h.clone().into());
                assert_eq!(
                    pipeline.steps,
                    vec![Step::from_json(json!({"op": "filter", "predicate": "a > 1"})).unwrap()]
                );
            }
            other => panic!("{other:?}"),
        }
        let err = Request::parse("no_such_op", body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("unknown operation"), "{err}");
        let err = Request::parse("filter", b"{not json").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        let err = Request::parse("filter", format!(r#"{{"input": "{h}", "predicat": "a"}}"#).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("predicat"), "{err}");
    }
}
