"""How Polars values travel to a worker: expressions as Polars' own JSON, types by name."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Union

import polars as pl

#: The Python Polars releases whose expressions a worker decodes (the worker says the same in
#: its INVALID_ARGUMENT answer to an expression it cannot read). The package's dependency, the
#: worker's `ACCEPTED_VERSIONS` and this are checked against each other by the test suite.
SUPPORTED_POLARS = ">=1.43,<2.2"

IntoExpr = Union[pl.Expr, str]

#: A JSON object as the worker reads it.
Json = dict[str, Any]

# Node kinds a worker refuses, and what the user wrote to make them: the worker's `FORBIDDEN`
# list (src/ops/expr/native.rs), checked against this one by the test suite.
_REFUSED = {
    "AnonymousFunction": "a Python function (map_elements, map_batches or another UDF)",
    "FfiPlugin": "a plugin (a shared library)",
    "SubPlan": "a sub-plan (a query inside the expression)",
    "Scan": "a scan of files",
    "PythonScan": "a scan calling Python",
    "Sink": "a sink",
    "Display": "a display-only node",
}


class UnshippableExpression(ValueError):
    """An expression that cannot run on a worker; raised before anything is sent."""


def _refused(node: Any) -> str | None:
    stack = [node]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                if key in _REFUSED:
                    return _REFUSED[key]
                if key == "RenameAlias" and isinstance(child, dict) and "Map" in (child.get("function") or {}):
                    return "a Python function (name.map)"
                if key in ("Float", "Float32", "Float64") and child is None:
                    # JSON has no NaN or infinity: Polars writes them as null, which no decoder reads.
                    return "a NaN or infinite float literal (write it as pl.lit(0.0) / 0.0 or float('inf') via a cast)"
                stack.append(child)
        elif isinstance(value, list):
            stack.extend(value)
    return None


def expr(value: Any, *, strings_are_columns: bool = True) -> Json:
    """`{"expr": <Polars JSON>}` for an expression; a string names a column, as in Polars."""
    if isinstance(value, str) and strings_are_columns:
        value = pl.col(value)
    if not isinstance(value, pl.Expr):
        value = pl.lit(value)
    try:
        text = value.meta.serialize(format="json")
    except Exception as err:  # noqa: BLE001 - Polars raises several kinds here
        raise UnshippableExpression(f"cannot send {value}: Polars could not serialize it ({err})") from err
    tree = json.loads(text)
    reason = _refused(tree)
    if reason:
        raise UnshippableExpression(f"cannot send {value}: it holds {reason}, which a worker does not run")
    return {"expr": tree}


def key(value: Any) -> str | Json:
    """A column key: a name as it is, an expression as JSON."""
    return value if isinstance(value, str) else expr(value)


def exprs(values: tuple[Any, ...], named: dict[str, Any] | None = None) -> list[Json]:
    """Expressions from Polars-style `*exprs, **named_exprs` (lists flattened, as Polars does)."""
    out: list[Json] = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out.extend(expr(x) for x in v)
        else:
            out.append(expr(v))
    for name, v in (named or {}).items():
        e = pl.col(v) if isinstance(v, str) else v if isinstance(v, pl.Expr) else pl.lit(v)
        out.append(expr(e.alias(name)))
    return out


def names(values: tuple[Any, ...]) -> list[str]:
    """Column names from Polars-style `*columns` (lists flattened)."""
    out: list[Any] = []
    for v in values:
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"expected column names, got {v!r}")
    return out


def dtype(value: Any) -> str:
    """A worker's name for a Polars data type (`i64`, `datetime[ms, UTC]`, ...)."""
    if isinstance(value, str):
        return value
    simple = {
        pl.Int8: "i8", pl.Int16: "i16", pl.Int32: "i32", pl.Int64: "i64",
        pl.UInt8: "u8", pl.UInt16: "u16", pl.UInt32: "u32", pl.UInt64: "u64",
        pl.Float32: "f32", pl.Float64: "f64", pl.Boolean: "bool", pl.String: "str",
        pl.Binary: "binary", pl.Date: "date", pl.Time: "time",
    }
    for cls, name in simple.items():
        if value == cls:
            return name
    if isinstance(value, pl.Datetime) or value == pl.Datetime:
        unit = getattr(value, "time_unit", None) or "us"
        tz = getattr(value, "time_zone", None)
        return f"datetime[{unit}, {tz}]" if tz else f"datetime[{unit}]"
    if isinstance(value, pl.Duration) or value == pl.Duration:
        return f"duration[{getattr(value, 'time_unit', None) or 'us'}]"
    if isinstance(value, pl.Decimal):
        return f"DECIMAL({value.precision}, {value.scale})"
    raise TypeError(f"no worker type name for {value!r}")


def duration(value: str | _dt.timedelta | int | float | None) -> str | int | float | None:
    """A Polars duration string (`1h30m`) from a string, a timedelta, or a number as it is."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    total_us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return f"{total_us}us"
