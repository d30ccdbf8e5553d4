//! What a `FlightDescriptor` names, decoded in one place.
//!
//! A descriptor is a path or a command. A path of one element is a result's handle (GetFlightInfo,
//! GetSchema, PollFlightInfo) or an upload's name (DoPut). A command is a Flight SQL command (a
//! protobuf `Any`), a queued job (`{"job": "<id>"}`), or JSON whose shape the RPC decides: an
//! operation (`{"op": ...}`), an upload's options (`{"name", "idempotency_key"}`) or an exchange's
//! steps (`{"steps": [...]}`). [`Descriptor::parse`] classifies; the typed readers below refuse
//! what does not fit the RPC, with INVALID_ARGUMENT naming the expected shape.

use arrow_flight::FlightDescriptor;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::sql::Command;
use serde::Deserialize;
use serde_json::Value;

use crate::engine::request::Request;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::ops::Step;

/// Longest name an upload's descriptor path may give.
const MAX_NAME: usize = 256;

/// A decoded descriptor.
#[derive(Debug)]
pub enum Descriptor {
    /// No path and no command (an upload without a name).
    Empty,
    /// A path.
    Path(Vec<String>),
    /// A Flight SQL command.
    Sql(Box<Command>),
    /// A queued job.
    Job(Handle),
    /// A JSON command, read by the RPC's own reader.
    Json(Vec<u8>),
}

/// What an upload asked for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// The dataset name to bind.
    pub name: Option<String>,
    /// A key that makes a repeated upload return the first one's result.
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    steps: Vec<Step>,
}

impl Descriptor {
    /// Classifies a descriptor; a malformed job reference is refused here.
    pub fn parse(descriptor: &FlightDescriptor) -> Result<Descriptor> {
        match descriptor.r#type() {
            DescriptorType::Path => Ok(Descriptor::Path(descriptor.path.clone())),
            DescriptorType::Cmd => {
                if let Some(command) = super::sql::decode(&descriptor.cmd) {
                    return Ok(Descriptor::Sql(Box::new(command)));
                }
                match job_reference(&descriptor.cmd)? {
                    Some(id) => Ok(Descriptor::Job(id)),
                    None => Ok(Descriptor::Json(descriptor.cmd.to_vec())),
                }
            }
            DescriptorType::Unknown => Ok(Descriptor::Empty),
        }
    }

    /// Classifies an optional descriptor (a stream's first message may carry none).
    pub fn parse_optional(descriptor: Option<&FlightDescriptor>) -> Result<Descriptor> {
        descriptor.map_or(Ok(Descriptor::Empty), Descriptor::parse)
    }

    /// The command descriptor that names job `id`.
    pub fn job(id: &Handle) -> FlightDescriptor {
        FlightDescriptor::new_cmd(serde_json::json!({"job": id.as_str()}).to_string())
    }

    /// The handle a path names (GetFlightInfo and the like).
    pub fn handle(path: &[String]) -> Result<Handle> {
        match path {
            [one] => Handle::parse(one),
            _ => Err(Error::invalid("descriptor path must be one handle")),
        }
    }

    /// The operation a JSON command asks for.
    pub fn operation(json: &[u8]) -> Result<Request> {
        Request::parse_command(json)
    }

    /// What an upload's descriptor asks for: a path of one name, or JSON options.
    pub fn upload(self) -> Result<Upload> {
        match self {
            Descriptor::Empty => Ok(Upload::default()),
            Descriptor::Path(path) => match path.as_slice() {
                [] => Ok(Upload::default()),
                [name] if !name.is_empty() && name.len() <= MAX_NAME => {
                    Ok(Upload { name: Some(name.clone()), idempotency_key: None })
                }
                _ => Err(Error::invalid(format!("descriptor path must be one name of 1 to {MAX_NAME} characters"))),
            },
            Descriptor::Json(json) => serde_json::from_slice(&json)
                .map_err(|e| Error::invalid(format!("upload command is not valid JSON: {e}"))),
            Descriptor::Job(_) | Descriptor::Sql(_) => {
                Err(Error::invalid(r#"an upload's command is {"name": ..., "idempotency_key": ...}"#))
            }
        }
    }

    /// The steps an exchange's descriptor asks for.
    pub fn exchange(self) -> Result<Vec<Step>> {
        let Descriptor::Json(json) = self else {
            return Err(Error::invalid(r#"DoExchange needs a command descriptor: {"steps": [...]}"#));
        };
        let command: Exchange =
            serde_json::from_slice(&json).map_err(|e| Error::invalid(format!("exchange command: {e}")))?;
        Ok(command.steps)
    }
}

/// The job a command names when it is `{"job": id}`; a `job` field of another shape is refused.
fn job_reference(cmd: &[u8]) -> Result<Option<Handle>> {
    let Ok(Value::Object(obj)) = serde_json::from_slice(cmd) else { return Ok(None) };
    match obj.get("job") {
        Some(Value::String(id)) if obj.len() == 1 => Ok(Some(Handle::parse(id)?)),
        Some(_) => Err(Error::invalid(r#"a job descriptor is {"job": "<id>"}"#)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
    use prost::Message;

    #[test]
    fn each_descriptor_shape_is_classified_once() {
        let id = Handle::random();
        assert!(matches!(Descriptor::parse(&Descriptor::job(&id)).unwrap(), Descriptor::Job(got) if got == id));
        let bad_job = FlightDescriptor::new_cmd(r#"{"job": 7}"#);
        assert!(matches!(Descriptor::parse(&bad_job), Err(Error::InvalidArgument(_))));
        let sql = CommandStatementQuery { query: "SELECT 1".into(), transaction_id: None }.as_any().encode_to_vec();
        assert!(matches!(Descriptor::parse(&FlightDescriptor::new_cmd(sql)).unwrap(), Descriptor::Sql(_)));
        let op = FlightDescriptor::new_cmd(r#"{"op": "select"}"#);
        assert!(matches!(Descriptor::parse(&op).unwrap(), Descriptor::Json(_)));
        let path = FlightDescriptor::new_path(vec!["t".into()]);
        assert!(matches!(Descriptor::parse(&path).unwrap(), Descriptor::Path(p) if p == ["t"]));
    }

    #[test]
    fn each_rpc_reads_its_own_shape() {
        let upload = Descriptor::Json(br#"{"name": "t", "idempotency_key": "k"}"#.to_vec()).upload().unwrap();
        assert_eq!((upload.name.as_deref(), upload.idempotency_key.as_deref()), (Some("t"), Some("k")));
        assert_eq!(Descriptor::Path(vec!["t".into()]).upload().unwrap().name.as_deref(), Some("t"));
        for bad in [
            Descriptor::Path(vec!["a".into(), "b".into()]),
            Descriptor::Path(vec![String::new()]),
            Descriptor::Json(b"{\"nam\": 1}".to_vec()),
        ] {
            assert!(matches!(bad.upload(), Err(Error::InvalidArgument(_))));
        }
        assert!(Descriptor::Json(br#"{"steps": []}"#.to_vec()).exchange().unwrap().is_empty());
        assert!(matches!(Descriptor::Empty.exchange(), Err(Error::InvalidArgument(_))));
        assert!(matches!(Descriptor::handle(&[]), Err(Error::InvalidArgument(_))));
    }
}
