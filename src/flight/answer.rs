//! The answers clients read: a result's JSON (action bodies, `PutResult` and `FlightInfo` app
//! metadata), the JSON of each other action, and the `FlightInfo` and endpoint of a result.

use arrow::datatypes::SchemaRef;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::engine::Outcome;
use crate::error::Result;
use crate::store::ResultMeta;

/// The JSON clients get for a result.
pub fn result_json(meta: &ResultMeta) -> Value {
    let mut v = json!({
        "handle": meta.handle.as_str(),
        "num_rows": meta.num_rows,
        "num_bytes": meta.num_bytes,
        "schema": meta.schema,
        "created_at": meta.created_at.to_rfc3339(),
        "expires_at": meta.expires_at.to_rfc3339(),
        "pinned": meta.pinned,
        "affinity": meta.affinity,
    });
    if let Some(name) = &meta.name {
        v["name"] = Value::String(name.clone());
    }
    v
}

/// The JSON body of a DoAction's answer.
pub fn outcome_json(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Result(meta) => result_json(meta),
        Outcome::Named { meta, name } => {
            let mut answer = result_json(meta);
            answer["name"] = Value::String(name.clone());
            answer
        }
        Outcome::Written { path, rows, bytes } => json!({"path": path, "num_rows": rows, "num_bytes": bytes}),
        Outcome::Sunk(written) => json!({
            "target": written.target,
            "files": written.files,
            "num_rows": written.rows,
            "num_bytes": written.bytes,
        }),
        Outcome::Schema { handle, schema } => json!({"handle": handle.as_str(), "schema": schema}),
        Outcome::Shape { handle, rows, columns } => {
            json!({"handle": handle.as_str(), "rows": rows, "columns": columns})
        }
        Outcome::Plan(plan) => json!({"plan": plan}),
        Outcome::Dropped(handle) => json!({"handle": handle.as_str(), "dropped": true}),
    }
}

/// A protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// Where a result can be fetched: its ticket, and its expiry unless pinned.
pub fn endpoint(meta: &ResultMeta) -> FlightEndpoint {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(meta.handle.to_string()));
    if meta.pinned { endpoint } else { endpoint.with_expiration_time(timestamp(meta.expires_at)) }
}

/// A dataset's `FlightInfo`: its schema, and its description (no endpoint: a dataset is read
/// through a plan, `{"dataset": name}`, or SQL).
pub fn dataset_info(name: &str, dataset: &crate::data::datasets::Dataset, schema: &SchemaRef) -> Result<FlightInfo> {
    let mut description = serde_json::to_value(dataset).expect("datasets serialise");
    description["dataset"] = json!(name);
    Ok(FlightInfo::new()
        .try_with_schema(schema)?
        .with_descriptor(FlightDescriptor::new_path(vec![name.to_string()]))
        .with_total_records(-1)
        .with_total_bytes(-1)
        .with_app_metadata(description.to_string()))
}

/// A result's `FlightInfo`, with `schema` as it will be streamed.
pub fn flight_info(meta: &ResultMeta, schema: &SchemaRef) -> Result<FlightInfo> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)?
        .with_descriptor(FlightDescriptor::new_path(vec![meta.handle.to_string()]))
        .with_endpoint(endpoint(meta))
        .with_total_records(meta.num_rows as i64)
        .with_total_bytes(meta.num_bytes as i64)
        .with_ordered(true)
        .with_app_metadata(result_json(meta).to_string()))
}
