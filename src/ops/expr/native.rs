//! Native Polars expressions on the wire: the JSON that Python Polars'
//! `Expr.meta.serialize(format="json")` writes, decoded with Polars' own serde support.
//!
//! The format is bare serde JSON with no version in it, and a decoded tree can carry more than
//! arithmetic: a Python function (`map_elements`, `map_batches`, `name.map`) as a pickled
//! payload, a plugin that loads a shared library, a whole sub-plan that scans any path or
//! `s3://` URL with credentials in plain text. None of that may run here, so a tree is read in
//! three passes:
//!
//! 1. the raw JSON is walked without recursion, bounding its depth and refusing, by name, every
//!    node kind that would run client code or reach storage ([`FORBIDDEN`]);
//! 2. it is decoded into a Polars [`Expr`]; what does not decode is refused with the client
//!    versions this worker speaks ([`ACCEPTED_VERSIONS`]);
//! 3. the decoded tree is walked again, refusing the same node kinds (in case a format change
//!    hides one from the first pass) and trees deeper than [`crate::ops::sqltext::MAX_DEPTH`].
//!
//! The Polars features that would run such nodes (`python`, `ffi_plugin`, `cloud`) are never
//! enabled, so a payload that slipped past both walks would fail to decode rather than run.
//! Raw expressions are never logged: a sub-plan can hold storage credentials.

use polars::prelude::*;
use polars_utils::UnitVec;
use serde_json::Value;

use crate::error::{Error, Result};

/// The Python Polars releases whose expression JSON this worker decodes (polars crates 0.55).
pub const ACCEPTED_VERSIONS: &str = "Python Polars 1.43 to 2.1";

/// Deepest JSON nesting a request may have: serde_json's own recursion limit, which also guards
/// the decoder's stack. A native expression costs two to three levels per node.
pub const MAX_JSON_DEPTH: usize = 128;

/// Node kinds refused wherever they appear, with what the client wrote to make them.
const FORBIDDEN: &[(&str, &str)] = &[
    ("AnonymousFunction", "a Python function (`map_elements`, `map_batches` or another UDF)"),
    ("FfiPlugin", "a plugin (a shared library loaded by the worker)"),
    ("SubPlan", "a sub-plan (a query inside the expression, which may scan files or cloud sources)"),
    ("Scan", "a scan of files or cloud sources"),
    ("PythonScan", "a scan calling Python"),
    ("Sink", "a sink (a plan that writes files)"),
    ("Display", "a display-only node"),
];

/// Function payloads that are pickled Python: `name.map(...)` is a `RenameAlias` with `Map`.
const PYTHON_PAYLOAD: &str = "a Python function (`name.map` or another UDF)";

/// Decodes one native expression for parameter `param`: the value of `{"expr": ...}`.
pub fn decode(param: &str, json: &Value) -> Result<Expr> {
    check_json(param, json)?;
    let expr: Expr = serde_json::from_value(json.clone()).map_err(|e| {
        Error::invalid(format!(
            "`{param}`: not a Polars expression this worker can decode ({ACCEPTED_VERSIONS}, \
             written by `Expr.meta.serialize(format=\"json\")`): {}",
            short(&e.to_string())
        ))
    })?;
    check_tree(param, &expr)?;
    Ok(expr)
}

/// The first pass: depth and forbidden node kinds, on the raw JSON, without recursion.
pub fn check_json(param: &str, json: &Value) -> Result<()> {
    let mut stack: Vec<(&Value, usize)> = vec![(json, 1)];
    while let Some((value, depth)) = stack.pop() {
        if depth > MAX_JSON_DEPTH {
            return Err(too_deep(param));
        }
        match value {
            Value::Object(fields) => {
                for (key, child) in fields {
                    if let Some((_, what)) = FORBIDDEN.iter().find(|(k, _)| k == key) {
                        return Err(refused(param, key, what));
                    }
                    if key == "RenameAlias" && child.get("function").is_some_and(|f| f.get("Map").is_some()) {
                        return Err(refused(param, "RenameAlias.Map", PYTHON_PAYLOAD));
                    }
                    stack.push((child, depth + 1));
                }
            }
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// The third pass: the decoded tree, node by node.
fn check_tree(param: &str, expr: &Expr) -> Result<()> {
    for node in expr {
        let key = match node {
            Expr::AnonymousFunction { .. } => "AnonymousFunction",
            Expr::SubPlan(..) => "SubPlan",
            Expr::Display { .. } => "Display",
            Expr::RenameAlias { function: RenameAliasFn::Map(_), .. } => {
                return Err(refused(param, "RenameAlias.Map", PYTHON_PAYLOAD));
            }
            _ => continue,
        };
        let what = FORBIDDEN.iter().find(|(k, _)| *k == key).map_or(key, |(_, what)| what);
        return Err(refused(param, key, what));
    }
    if depth(expr) > crate::ops::sqltext::MAX_DEPTH {
        return Err(too_deep(param));
    }
    Ok(())
}

/// The depth of a tree, without recursion.
fn depth(expr: &Expr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(expr, 1usize)];
    let mut children: UnitVec<&Expr> = UnitVec::new();
    while let Some((node, d)) = stack.pop() {
        deepest = deepest.max(d);
        children.clear();
        node.nodes(&mut children);
        stack.extend(children.iter().map(|c| (*c, d + 1)));
    }
    deepest
}

fn refused(param: &str, node: &str, what: &str) -> Error {
    Error::invalid(format!("`{param}`: the expression holds {what} (node `{node}`), which the worker does not run"))
}

fn too_deep(param: &str) -> Error {
    Error::invalid(format!(
        "`{param}`: the expression is nested too deep (more than {MAX_JSON_DEPTH} JSON levels or {} operators)",
        crate::ops::sqltext::MAX_DEPTH
    ))
}

/// A decoder message, capped: it can quote much of the payload.
fn short(message: &str) -> String {
    const MAX: usize = 300;
    match message.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &message[..i]),
        None => message.to_string(),
    }
}

/// How deep `body`'s JSON nests, read from its bytes (strings skipped) before a parser runs.
pub fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether a native expression calls a function that can make values much larger than its
/// arguments, or holds a long string literal (see [`crate::ops::sqltext::expands`]).
pub fn expands(json: &Value) -> bool {
    const EXPANDING: &[&str] = &[
        "PadStart",
        "PadEnd",
        "ZFill",
        "Replace",
        "ReplaceMany",
        "Repeat",
        "RepeatBy",
        "ConcatHorizontal",
        "ConcatVertical",
        "ExtendConstant",
    ];
    let mut stack = vec![json];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) if (s.len() > 4096 || EXPANDING.contains(&s.as_str())) => {
                return true;
            }
            Value::Object(fields) => {
                for (key, child) in fields {
                    if EXPANDING.contains(&key.as_str()) {
                        return true;
                    }
                    stack.push(child);
                }
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn python_polars_json_decodes_to_the_same_expression() {
        // Written by Python Polars 2.1.0 (and 1.43.2, byte for byte).
        let e = decode(
            "predicate",
            &json(r#"{"BinaryExpr":{"left":{"Column":"qty"},"op":"Gt","right":{"Literal":{"Dyn":{"Int":10}}}}}"#),
        )
        .unwrap();
        assert_eq!(e, col("qty").gt(lit(10)));
        let e = decode(
            "columns",
            &json(r#"{"Alias":[{"Function":{"input":[{"Column":"s"}],"function":{"StringExpr":"Uppercase"}}},"u"]}"#),
        )
        .unwrap();
        assert_eq!(e, col("s").str().to_uppercase().alias("u"));
        let e = decode("aggs", &json(r#"{"Over":{"function":{"Agg":{"Sum":{"Column":"a"}}},"partition_by":[{"Column":"g"}],"order_by":null,"mapping":"GroupsToRows"}}"#)).unwrap();
        assert_eq!(e, col("a").sum().over([col("g")]).unwrap());
    }

    #[test]
    fn forbidden_nodes_are_refused_by_name() {
        let cases = [
            (
                r#"{"AnonymousFunction":{"input":[{"Column":"a"}],"function":[80,76,80,89,70,78],"options":{}}}"#,
                "map_elements",
            ),
            (
                r#"{"Function":{"input":[{"Column":"a"}],"function":{"FfiPlugin":{"lib":"/tmp/x.so","symbol":"f","kwargs":[]}}}}"#,
                "plugin",
            ),
            (r#"{"SubPlan":[{"Scan":{"sources":{"Paths":["s3://b/x.parquet"]}}},[]]}"#, "sub-plan"),
            (r#"{"RenameAlias":{"function":{"Map":[1,2,3]},"expr":{"Column":"a"}}}"#, "name.map"),
        ];
        for (text, name) in cases {
            let err = decode("predicate", &json(text)).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn a_scan_of_an_object_store_is_refused_with_the_cloud_features_compiled_in() {
        // This crate's Polars can read s3:// (the data root's scans): a plan that reaches a store
        // is never run from an expression, by its JSON's node names or by the decoded node.
        let scan =
            LazyFrame::scan_parquet(polars::prelude::PlRefPath::new("s3://bucket/x.parquet"), Default::default())
                .unwrap();
        let expr = Expr::SubPlan(SpecialEq::new(std::sync::Arc::new(scan.logical_plan)), vec![]);
        let written = serde_json::to_value(&expr).expect("Polars writes a sub-plan's scan");
        assert!(written.to_string().contains("s3://bucket/x.parquet"), "{written}");
        let err = decode("predicate", &written).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("sub-plan"), "{err}");
        let err = check_tree("predicate", &(col("a") + expr)).unwrap_err();
        assert!(err.to_string().contains("sub-plan"), "{err}");
    }

    #[test]
    fn undecodable_and_deep_trees_are_refused() {
        let err = decode("predicate", &json(r#"{"NoSuchNode":1}"#)).unwrap_err();
        assert!(err.to_string().contains(ACCEPTED_VERSIONS), "{err}");
        let mut deep = r#"{"Column":"a"}"#.to_string();
        for _ in 0..MAX_JSON_DEPTH {
            deep = format!(r#"{{"Alias":[{deep},"x"]}}"#);
        }
        let mut value = Value::Null;
        // Built by hand: serde_json's parser would itself refuse this depth.
        for _ in 0..2 * MAX_JSON_DEPTH {
            value = serde_json::json!({"Alias": [value, "x"]});
        }
        let err = decode("predicate", &value).unwrap_err();
        assert!(err.to_string().contains("too deep"), "{err}");
        assert!(json_depth(deep.as_bytes()) > MAX_JSON_DEPTH);
        assert_eq!(json_depth(br#"{"a": "{[{[", "b": [1, {"c": 2}]}"#), 3);
    }
}
