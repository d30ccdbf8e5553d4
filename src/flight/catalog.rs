//! The actions a worker offers, with the one-line parameter summary `ListActions` returns.

/// Standard Flight action: extend a result's expiry (body: `RenewFlightEndpointRequest`).
pub const RENEW_FLIGHT_ENDPOINT: &str = "RenewFlightEndpoint";
/// Standard Flight action: delete the results of a `FlightInfo` (body: `CancelFlightInfoRequest`).
pub const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// `(action type, description)` for the actions that are not data operations; the data
/// operations come from [`crate::ops::registry`] (see [`actions`]).
const OTHER_ACTIONS: &[(&str, &str)] = &[
    ("pipeline", r#"{"input": h, "steps": [{"op": "filter", "predicate": "..."}, {"op": "head", "n": 2}]}"#),
    ("read_csv", r#"{"path": "dir/file.csv", "has_header": true, "separator": ",", "columns": ["a"], "n_rows": 100}"#),
    ("read_parquet", r#"{"path": "file.parquet", "columns": ["a"], "n_rows": 100}"#),
    ("read_ipc", r#"{"path": "file.arrow", "columns": ["a"], "n_rows": 100}"#),
    ("write_csv", r#"{"input": h, "path": "out.csv"}"#),
    ("write_parquet", r#"{"input": h, "path": "out.parquet"}"#),
    ("write_ipc", r#"{"input": h, "path": "out.arrow"}"#),
    ("schema", r#"{"input": h} -> {"schema": [{"name", "type"}]}"#),
    ("shape", r#"{"input": h} -> {"rows": N, "columns": N}"#),
    ("explain", r#"{"input": h, "steps": [...]} -> {"plan": "optimised Polars plan"}"#),
    ("pin", r#"{"handle": h} -> the result, exempt from expiry"#),
    ("unpin", r#"{"handle": h} -> the result, expiring again"#),
    ("drop_handle", r#"{"handle": h} -> {"dropped": true}"#),
    ("name", r#"{"handle": h, "name": "trades"} -> the result, now the table `trades` for Flight SQL"#),
    (RENEW_FLIGHT_ENDPOINT, "standard: RenewFlightEndpointRequest -> FlightEndpoint with the new expiration_time"),
    (CANCEL_FLIGHT_INFO, "standard: CancelFlightInfoRequest -> CancelFlightInfoResult; deletes the results"),
];

/// `(action type, description)` for every action: the registered operations first.
pub fn actions() -> Vec<(&'static str, &'static str)> {
    crate::ops::registry::OPERATIONS
        .iter()
        .map(|e| (e.spec.name, e.spec.example))
        .chain(OTHER_ACTIONS.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::request::Request;

    #[test]
    fn every_listed_operation_is_known() {
        for (name, _) in actions() {
            if [RENEW_FLIGHT_ENDPOINT, CANCEL_FLIGHT_INFO].contains(&name) {
                continue;
            }
            if let Err(e) = Request::parse(name, b"{}") {
                assert!(!e.to_string().contains("unknown operation"), "{name}: {e}");
            }
        }
    }
}
