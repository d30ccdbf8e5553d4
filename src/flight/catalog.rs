//! The actions a worker offers, with the one-line parameter summary `ListActions` returns.

/// Standard Flight action: extend a result's expiry (body: `RenewFlightEndpointRequest`).
pub const RENEW_FLIGHT_ENDPOINT: &str = "RenewFlightEndpoint";
/// Standard Flight action: delete the results of a `FlightInfo` (body: `CancelFlightInfoRequest`).
pub const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// `(action type, description)` for every action.
pub const ACTIONS: &[(&str, &str)] = &[
    ("filter", r#"{"input": h, "predicate": "qty > 10 AND sym = 'MSFT'"}"#),
    ("select", r#"{"input": h, "columns": ["sym", "qty * 2 AS q2"]}"#),
    ("with_columns", r#"{"input": h, "columns": {"notional": "qty * price"}}"#),
    ("sort", r#"{"input": h, "by": ["price"], "descending": [true], "nulls_last": false, "maintain_order": false}"#),
    ("group_by", r#"{"input": h, "by": ["sym"], "aggs": ["sum(qty) AS total"], "maintain_order": false}"#),
    ("join", r#"{"left": h1, "right": h2, "on": ["sym"] | "left_on"/"right_on", "how": "inner|left|right|full|semi|anti|cross", "suffix": "_right"}"#),
    ("asof_join", r#"{"left": h1, "right": h2, "on": "ts" | "left_on"/"right_on", "by": ["sym"], "strategy": "backward|forward|nearest", "tolerance": "5m" | 10, "suffix": "_right", "allow_exact_matches": true}"#),
    ("concat", r#"{"inputs": [h1, h2], "how": "vertical|vertical_relaxed|horizontal|diagonal|diagonal_relaxed"}"#),
    ("head", r#"{"input": h, "n": 3}"#),
    ("tail", r#"{"input": h, "n": 3}"#),
    ("limit", r#"{"input": h, "n": 3}"#),
    ("slice", r#"{"input": h, "offset": 2, "length": 3}"#),
    ("drop", r#"{"input": h, "columns": ["a", "b"]}"#),
    ("rename", r#"{"input": h, "mapping": {"old": "new"}, "strict": true}"#),
    ("cast", r#"{"input": h, "dtypes": {"qty": "f64", "ts": "datetime[ms, UTC]"}, "strict": true}"#),
    ("unique", r#"{"input": h, "subset": ["sym"], "keep": "first|last|any|none", "maintain_order": true}"#),
    ("drop_nulls", r#"{"input": h, "subset": ["qty"]}"#),
    ("fill_null", r#"{"input": h, "value": 0 | "strategy": "forward|backward|mean|min|max|zero|one", "limit": 2, "columns": ["qty"]}"#),
    ("fill_nan", r#"{"input": h, "value": 0.0}"#),
    ("interpolate", r#"{"input": h, "method": "linear|nearest", "columns": ["price"]}"#),
    ("pivot", r#"{"input": h, "on": ["sym"], "index": ["day"], "values": ["qty"], "agg": "first|last|sum|mean|median|min|max|count|len", "separator": "_"}"#),
    ("unpivot", r#"{"input": h, "index": ["day"], "on": ["a", "b"], "variable_name": "variable", "value_name": "value"}"#),
    ("describe", r#"{"input": h, "percentiles": [0.25, 0.5, 0.75]}"#),
    ("resample", r#"{"input": h, "index": "ts", "every": "1h", "period": "1h", "offset": "0m", "closed": "left", "label": "left", "by": ["sym"], "aggs": ["sum(qty) AS qty"]}"#),
    ("rolling", r#"{"input": h, "columns": ["price"], "agg": "mean|sum|min|max|median|std|var", "window_size": 3 | "window": "2h" with "by": "ts", "min_periods": 1, "closed": "right"}"#),
    ("shift", r#"{"input": h, "n": 1, "columns": ["price"], "suffix": "_lag"}"#),
    ("diff", r#"{"input": h, "n": 1, "columns": ["price"], "suffix": "_diff"}"#),
    ("pct_change", r#"{"input": h, "n": 1, "columns": ["price"], "suffix": "_pct"}"#),
    ("cum_sum", r#"{"input": h, "columns": ["qty"], "reverse": false, "suffix": "_cum"}"#),
    ("cumulative", r#"{"input": h, "kind": "sum|prod|min|max|count", "columns": ["qty"], "reverse": false, "suffix": "_cum"}"#),
    ("sample", r#"{"input": h, "n": 10 | "fraction": 0.1, "with_replacement": false, "shuffle": false, "seed": 42}"#),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;

    #[test]
    fn every_listed_operation_is_known() {
        for (name, _) in ACTIONS {
            if [RENEW_FLIGHT_ENDPOINT, CANCEL_FLIGHT_INFO].contains(name) {
                continue;
            }
            if let Err(e) = Request::parse(name, b"{}") {
                assert!(!e.to_string().contains("unknown operation"), "{name}: {e}");
            }
        }
    }
}
