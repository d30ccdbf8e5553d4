//! The small languages inside operation specs: expressions (SQL text or native Polars JSON),
//! data types, durations and JSON scalars.
//!
//! An expression parameter takes either form, and the two mix freely within one request:
//!
//! - a string is SQL, parsed by Polars' SQL parser: `"qty * price"`, `"sum(qty) AS total"`;
//! - `{"expr": <JSON>}` is a native Polars expression, as Python Polars'
//!   `Expr.meta.serialize(format="json")` writes it, decoded and checked by [`native`].
//!
//! A parameter that names columns ([`Key`]) reads a string as an exact column name instead.

pub mod native;

use polars::prelude::*;
use polars::sql::sql_expr;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};

/// The field that marks a native expression: `{"expr": ...}`.
pub const NATIVE_FIELD: &str = "expr";

/// An expression parameter: SQL text, or a native Polars expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expression {
    /// SQL expression text.
    Sql(String),
    /// A native expression's JSON, still undecoded (it is checked when the plan is built).
    Native(Value),
}

/// A parameter naming a column: its exact name, or a native expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    /// A column, by its exact name (`*` and `^...$` are not patterns here).
    Name(String),
    /// A native expression's JSON.
    Native(Value),
}

/// Reads a string or `{"expr": ...}`; `what` names the string's meaning in the error.
fn text_or_native<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
) -> std::result::Result<std::result::Result<String, Value>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(Ok(s)),
        Value::Object(mut fields) if fields.len() == 1 && fields.contains_key(NATIVE_FIELD) => {
            Ok(Err(fields.remove(NATIVE_FIELD).expect("checked")))
        }
        _ => Err(serde::de::Error::custom(format!(
            "expected {what} or {{\"{NATIVE_FIELD}\": <a Polars expression serialized as JSON>}}"
        ))),
    }
}

fn native_json<S: Serializer>(s: S, json: &Value) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry(NATIVE_FIELD, json)?;
    map.end()
}

impl<'de> Deserialize<'de> for Expression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match text_or_native(d, "SQL expression text")? {
            Ok(s) => Expression::Sql(s),
            Err(json) => Expression::Native(json),
        })
    }
}

impl Serialize for Expression {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Expression::Sql(text) => s.serialize_str(text),
            Expression::Native(json) => native_json(s, json),
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match text_or_native(d, "a column name")? {
            Ok(s) => Key::Name(s),
            Err(json) => Key::Native(json),
        })
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Key::Name(name) => s.serialize_str(name),
            Key::Native(json) => native_json(s, json),
        }
    }
}

impl From<&str> for Expression {
    fn from(text: &str) -> Expression {
        Expression::Sql(text.to_string())
    }
}

impl From<&str> for Key {
    fn from(name: &str) -> Key {
        Key::Name(name.to_string())
    }
}

impl Expression {
    /// The Polars expression, naming `param` on error.
    pub fn to_expr(&self, param: &str) -> Result<Expr> {
        match self {
            Expression::Sql(text) => parse(param, text),
            Expression::Native(json) => native::decode(param, json),
        }
    }

    /// Whether it can make values far larger than its inputs (see [`crate::ops::sqltext::expands`]).
    pub fn expands(&self) -> bool {
        match self {
            Expression::Sql(text) => crate::ops::sqltext::expands(text),
            Expression::Native(json) => native::expands(json),
        }
    }
}

impl Key {
    /// The Polars expression, naming `param` on error.
    pub fn to_expr(&self, param: &str) -> Result<Expr> {
        match self {
            Key::Name(name) => Ok(column(name)),
            Key::Native(json) => native::decode(param, json),
        }
    }
}

/// Whether an expression always makes one row: an aggregation, or arithmetic, casts and
/// conditions over aggregations and scalar literals.
pub fn reduces(e: &Expr) -> bool {
    fn scalar_literal(e: &Expr) -> bool {
        matches!(e, Expr::Literal(LiteralValue::Dyn(_) | LiteralValue::Scalar(_)))
    }
    fn part(e: &Expr) -> bool {
        reduces(e) || scalar_literal(e)
    }
    match e {
        Expr::Agg(_) | Expr::Len | Expr::Function { function: FunctionExpr::NullCount, .. } => true,
        Expr::Alias(inner, _) => reduces(inner),
        Expr::Cast { expr, .. } => reduces(expr),
        Expr::BinaryExpr { left, right, .. } => part(left) && part(right) && (reduces(left) || reduces(right)),
        Expr::Ternary { predicate, truthy, falsy } => {
            part(predicate) && part(truthy) && part(falsy) && (reduces(predicate) || reduces(truthy) || reduces(falsy))
        }
        _ => false,
    }
}

/// Expressions for a list of parameters.
pub fn to_exprs(param: &str, items: &[Expression]) -> Result<Vec<Expr>> {
    items.iter().map(|e| e.to_expr(param)).collect()
}

/// Expressions for a list of column keys.
pub fn key_exprs(param: &str, keys: &[Key]) -> Result<Vec<Expr>> {
    keys.iter().map(|k| k.to_expr(param)).collect()
}

/// Parses one SQL expression (`"qty * price"`, `"sum(qty) AS total"`), naming the parameter on error.
pub fn parse(param: &str, text: &str) -> Result<Expr> {
    crate::ops::sqltext::check(param, text)?;
    sql_expr(text).map_err(|e| Error::invalid(format!("`{param}`: cannot parse `{text}`: {e}")))
}

/// Parses a list of SQL expressions.
pub fn parse_all(param: &str, texts: &[String]) -> Result<Vec<Expr>> {
    texts.iter().map(|t| parse(param, t)).collect()
}

/// Aggregations for a group_by, and the fix-ups to run after it.
pub struct Aggregations {
    /// The expressions inside `.agg(...)`.
    pub aggs: Vec<Expr>,
    /// `with_columns` after the aggregation (SQL's NULL for a SUM over no values).
    pub after: Vec<Expr>,
    /// Helper columns to drop at the end.
    pub hidden: Vec<PlSmallStr>,
    /// The outputs that are SQL text's `SUM`: NULL over a group without values.
    pub sql_sums: Vec<PlSmallStr>,
}

/// A plain identifier, or a double-quoted one.
fn identifier(text: &str) -> Option<&str> {
    let text = text.trim();
    if let Some(quoted) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return (!quoted.is_empty() && !quoted.contains('"')).then_some(quoted);
    }
    let mut bytes = text.bytes();
    (bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then_some(text)
}

/// `sum(<column>) [AS <name>]`: the column and the output name.
fn plain_sum(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let head = text.get(..4)?;
    if !head.eq_ignore_ascii_case("sum(") {
        return None;
    }
    let close = text.find(')')?;
    let column = identifier(&text[4..close])?;
    let rest = text[close + 1..].trim();
    if rest.is_empty() {
        return Some((column, column));
    }
    let (kw, name) = rest.split_at_checked(2)?;
    if !kw.eq_ignore_ascii_case("as") || !name.starts_with(|c: char| c.is_whitespace() || c == '"') {
        return None;
    }
    Some((column, identifier(name)?))
}

/// Parses group_by aggregations; native ones are taken as they are. SQL's `SUM` is NULL over a group without values, which Polars'
/// SQL translation expresses as a conditional per group that leaves Polars' fast grouped-sum
/// path; a plain `sum(col)` is therefore computed as a fast sum and a fast non-null count, and
/// the NULL applied to the (few) aggregated rows afterwards. Results are the same.
pub fn parse_aggs(param: &str, items: &[Expression]) -> Result<Aggregations> {
    let mut out = Aggregations { aggs: Vec::new(), after: Vec::new(), hidden: Vec::new(), sql_sums: Vec::new() };
    for (i, item) in items.iter().enumerate() {
        let text = match item {
            Expression::Sql(text) => text,
            Expression::Native(_) => {
                out.aggs.push(item.to_expr(param)?);
                continue;
            }
        };
        match plain_sum(text) {
            Some((column, name)) => {
                let count: PlSmallStr = format!("__polarway_count_{i}").into();
                out.aggs.push(col(column).sum().alias(name));
                out.aggs.push(col(column).count().alias(count.clone()));
                out.after.push(when(col(count.clone()).eq(lit(0))).then(lit(NULL)).otherwise(col(name)).alias(name));
                out.hidden.push(count);
                out.sql_sums.push(name.into());
            }
            None => out.aggs.push(parse(param, text)?),
        }
    }
    Ok(out)
}

/// Column references for a list of plain names.
pub fn columns(names: &[String]) -> Vec<Expr> {
    names.iter().map(|n| column(n)).collect()
}

/// One column by its exact name. Polars' `col` reads `*` and `^...$` as patterns, which a
/// parameter that names a column must not be (a `*` resample index once panicked inside Polars).
pub fn column(name: &str) -> Expr {
    Expr::Column(name.into())
}

/// A strict selector over the named columns.
pub fn selector(names: &[String]) -> Selector {
    cols(names.iter().map(String::as_str))
}

/// Parses a data type: Polars names (`i64`, `f64`, `str`, `bool`, `date`, `datetime[ms, UTC]`,
/// `duration[us]`, `decimal(10,2)`) or SQL type names (`BIGINT`, `DOUBLE`, `VARCHAR`, ...).
pub fn dtype(param: &str, text: &str) -> Result<DataType> {
    let t = text.trim().to_ascii_lowercase();
    let simple = match t.as_str() {
        "i8" | "int8" => Some(DataType::Int8),
        "i16" | "int16" => Some(DataType::Int16),
        "i32" | "int32" => Some(DataType::Int32),
        "i64" | "int64" => Some(DataType::Int64),
        "u8" | "uint8" => Some(DataType::UInt8),
        "u16" | "uint16" => Some(DataType::UInt16),
        "u32" | "uint32" => Some(DataType::UInt32),
        "u64" | "uint64" => Some(DataType::UInt64),
        "f32" | "float32" => Some(DataType::Float32),
        "f64" | "float64" => Some(DataType::Float64),
        "bool" | "boolean" => Some(DataType::Boolean),
        "str" | "string" | "utf8" => Some(DataType::String),
        "binary" => Some(DataType::Binary),
        "date" => Some(DataType::Date),
        "time" => Some(DataType::Time),
        "datetime" => Some(DataType::Datetime(TimeUnit::Microseconds, None)),
        "duration" => Some(DataType::Duration(TimeUnit::Microseconds)),
        _ => None,
    };
    if let Some(dt) = simple {
        return Ok(dt);
    }
    if let Some(inner) = t.strip_prefix("datetime[").and_then(|r| r.strip_suffix(']')) {
        let mut parts = inner.splitn(2, ',').map(str::trim);
        let unit = time_unit(param, parts.next().unwrap_or(""))?;
        let tz = match parts.next() {
            None => None,
            // Time zone names are case-sensitive: take them from the original text.
            Some(_) => {
                let original = text.trim();
                let start = original.find(',').map(|i| i + 1).unwrap_or(original.len());
                let name = original[start..].trim().trim_end_matches(']').trim();
                Some(
                    TimeZone::opt_try_new(Some(name))?
                        .ok_or_else(|| Error::invalid(format!("`{param}`: empty time zone in `{text}`")))?,
                )
            }
        };
        return Ok(DataType::Datetime(unit, tz));
    }
    if let Some(inner) = t.strip_prefix("duration[").and_then(|r| r.strip_suffix(']')) {
        return Ok(DataType::Duration(time_unit(param, inner.trim())?));
    }
    // Anything else is read as a SQL type name through Polars' SQL parser.
    let dt = match parse(param, &format!("CAST(NULL AS {text})"))? {
        Expr::Cast { dtype, .. } => dtype
            .into_datatype(&Schema::default())
            .map_err(|_| Error::invalid(format!("`{param}`: unknown data type `{text}`")))?,
        _ => return Err(Error::invalid(format!("`{param}`: unknown data type `{text}`"))),
    };
    // Polars asserts (panics) on decimal precision outside 1..=38.
    if let DataType::Decimal(precision, scale) = dt
        && (!(1..=38).contains(&precision) || scale > precision)
    {
        return Err(Error::invalid(format!(
            "`{param}`: `{text}` needs precision 1 to 38 and scale at most the precision"
        )));
    }
    Ok(dt)
}

fn time_unit(param: &str, text: &str) -> Result<TimeUnit> {
    match text {
        "ns" => Ok(TimeUnit::Nanoseconds),
        "us" | "μs" => Ok(TimeUnit::Microseconds),
        "ms" => Ok(TimeUnit::Milliseconds),
        other => Err(Error::invalid(format!("`{param}`: unknown time unit `{other}` (ns, us, ms)"))),
    }
}

/// Parses a Polars duration string such as `1h`, `15m`, `2d12h`, `3i` (index count).
pub fn duration(param: &str, text: &str) -> Result<Duration> {
    Duration::try_parse(text).map_err(|e| Error::invalid(format!("`{param}`: `{text}` is not a duration: {e}")))
}

/// Parses a duration that must be greater than zero (window sizes and strides; Polars panics on
/// zero or negative ones).
pub fn positive_duration(param: &str, text: &str) -> Result<Duration> {
    let d = duration(param, text)?;
    if d.is_zero() || d.negative() {
        return Err(Error::invalid(format!("`{param}`: `{text}` must be a positive duration")));
    }
    Ok(d)
}

/// Rough length of a duration in nanoseconds, months counted as `month_days` days; no overflow.
fn approx_ns(d: &Duration, month_days: i128) -> i128 {
    const DAY: i128 = 86_400_000_000_000;
    (d.months() as i128).abs() * month_days * DAY
        + (d.weeks() as i128).abs() * 7 * DAY
        + (d.days() as i128).abs() * DAY
        + (d.nanoseconds() as i128).abs()
}

/// Refuses a window offset larger than the window stride: Polars would enumerate every window
/// between the data and the shifted start, which for a large offset runs for hours.
pub fn check_offset(every: &Duration, offset: &Duration) -> Result<()> {
    if approx_ns(offset, 28) > approx_ns(every, 31) {
        return Err(Error::invalid("`offset`: must not be longer than `every`"));
    }
    Ok(())
}

/// A literal expression from a JSON scalar.
pub fn scalar(param: &str, value: &serde_json::Value) -> Result<Expr> {
    use serde_json::Value;
    match value {
        Value::Null => Ok(lit(NULL)),
        Value::Bool(b) => Ok(lit(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(lit(i))
            } else if let Some(u) = n.as_u64() {
                Ok(lit(u))
            } else {
                Ok(lit(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => Ok(lit(s.clone())),
        Value::Array(_) | Value::Object(_) => {
            Err(Error::invalid(format!("`{param}`: expected a number, string, boolean or null")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_parse() {
        assert_eq!(dtype("t", "i64").unwrap(), DataType::Int64);
        assert_eq!(dtype("t", "DOUBLE").unwrap(), DataType::Float64);
        assert_eq!(
            dtype("t", "datetime[ms, Europe/Paris]").unwrap(),
            DataType::Datetime(TimeUnit::Milliseconds, TimeZone::opt_try_new(Some("Europe/Paris")).unwrap())
        );
        assert!(dtype("t", "nonsense)").is_err());
        assert!(dtype("t", "decimal(40, 2)").is_err());
        assert!(positive_duration("every", "0h").is_err());
        assert!(positive_duration("every", "-1h").is_err());
        let every = duration("every", "1h").unwrap();
        assert!(check_offset(&every, &duration("offset", "-30m").unwrap()).is_ok());
        assert!(check_offset(&every, &duration("offset", "-99999999d").unwrap()).is_err());
    }

    #[test]
    fn bad_expression_names_the_parameter() {
        let err = parse("predicate", "qty >>> 1").unwrap_err();
        assert!(err.to_string().contains("predicate"), "{err}");
    }
}
