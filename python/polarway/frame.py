"""`RemoteFrame`: a lazy, Polars-shaped plan over a stored result, a scan of the worker's data
root, or a declared dataset.

Its methods carry Polars' `LazyFrame` names and signatures and take `pl.Expr` (and strings as
column names, as Polars does). Each returns a new frame with one more step; nothing is sent
until an output is asked for (`collect`, `collect_schema`, `explain`, `persist`, `to_arrow`,
`sink_*`). The other side of a join, and a concat's frames, travel as sub-plans of the same
request: the whole tree runs as one plan, and only its final result is stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from . import wire
from .wire import IntoExpr, Json

if TYPE_CHECKING:  # the client imports this module
    from . import Client

#: The largest row count a worker takes (Polars' 32-bit row index).
_ALL_ROWS = 2**32 - 1


def affinity_of(source: Any) -> str:
    """The routing key of a plan's source: a handle's own, or a digest of a scan's description."""
    if isinstance(source, str):
        return source
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class RemoteFrame:
    """A lazy chain of operations over a source; `collect()` runs it as one pipeline.

    `source` is a handle (a stored result), `{"scan": {...}}` (files under the worker's data
    root), `{"dataset": name}` or a sub-plan."""

    client: Client
    source: Any
    affinity: str
    steps: tuple[Json, ...] = field(default_factory=tuple)

    @property
    def handle(self) -> str:
        """The stored result this frame is, when it is one (after `persist()`, or an upload)."""
        if isinstance(self.source, str) and not self.steps:
            return self.source
        raise ValueError("this frame is a plan, not a stored result: call persist() first")

    def _tree(self) -> Any:
        """This frame as a source of another plan: its own source, or a sub-plan."""
        if not self.steps:
            return self.source
        return {"input": self.source, "steps": list(self.steps)}

    def _plan(self) -> Json:
        return {"input": self.source, "steps": list(self.steps)}

    # -- building ------------------------------------------------------------------------

    def _with(self, op: str, **params: Any) -> RemoteFrame:
        step = {"op": op, **{k: v for k, v in params.items() if v is not None}}
        return replace(self, steps=self.steps + (step,))

    def pipe(self, op: str, **params: Any) -> RemoteFrame:
        """Any operation the worker lists, as a step: `df.pipe("fill_null", strategy="forward")`."""
        known = self.client.operations()
        if op not in known:
            raise ValueError(f"the worker has no operation {op!r}")
        return self._with(op, **params)

    def filter(self, *predicates: IntoExpr, **constraints: Any) -> RemoteFrame:
        """Rows where every predicate holds; `name=value` keywords compare a column."""
        parts = [pl.col(p) if isinstance(p, str) else p for p in predicates]
        parts += [pl.col(name) == value for name, value in constraints.items()]
        if not parts:
            raise TypeError("filter needs at least one predicate")
        combined = parts[0]
        for p in parts[1:]:
            combined = combined & p
        return self._with("filter", predicate=wire.expr(combined))

    def select(self, *exprs: IntoExpr | Sequence[IntoExpr], **named_exprs: Any) -> RemoteFrame:
        return self._with("select", columns=wire.exprs(exprs, named_exprs))

    def with_columns(self, *exprs: IntoExpr | Sequence[IntoExpr], **named_exprs: Any) -> RemoteFrame:
        return self._with("with_columns", columns=wire.exprs(exprs, named_exprs))

    def sort(self, by: IntoExpr | Sequence[IntoExpr], *more_by: IntoExpr,
             descending: bool | Sequence[bool] = False, nulls_last: bool = False,
             maintain_order: bool = False) -> RemoteFrame:
        keys = (list(by) if isinstance(by, (list, tuple)) else [by]) + list(more_by)
        return self._with("sort", by=[wire.key(k) for k in keys],
                          descending=list(descending) if isinstance(descending, (list, tuple)) else descending,
                          nulls_last=nulls_last, maintain_order=maintain_order)

    def group_by(self, *by: IntoExpr | Sequence[IntoExpr], maintain_order: bool = False,
                 **named_by: Any) -> GroupBy:
        return GroupBy(self, "group_by", {"by": wire.exprs(by, named_by), "maintain_order": maintain_order})

    def join(self, other: RemoteFrame, on: IntoExpr | Sequence[IntoExpr] | None = None,
             how: str = "inner", *, left_on: IntoExpr | Sequence[IntoExpr] | None = None,
             right_on: IntoExpr | Sequence[IntoExpr] | None = None, suffix: str = "_right") -> RemoteFrame:
        def keys(v: Any) -> list[str | Json] | None:
            if v is None:
                return None
            return [wire.key(k) for k in (v if isinstance(v, (list, tuple)) else [v])]

        return self._with("join", right=other._tree(), on=keys(on), left_on=keys(left_on),
                          right_on=keys(right_on), how=how, suffix=suffix)

    def join_asof(self, other: RemoteFrame, *, left_on: str | None = None, right_on: str | None = None,
                  on: str | None = None, by: str | Sequence[str] | None = None,
                  strategy: str = "backward", suffix: str = "_right", tolerance: Any = None,
                  allow_exact_matches: bool = True) -> RemoteFrame:
        return self._with("asof_join", right=other._tree(), on=on, left_on=left_on, right_on=right_on,
                          by=[by] if isinstance(by, str) else list(by or []), strategy=strategy, suffix=suffix,
                          tolerance=wire.duration(tolerance), allow_exact_matches=allow_exact_matches)

    def join_where(self, other: RemoteFrame, *predicates: pl.Expr, suffix: str = "_right") -> RemoteFrame:
        return self._with("join_where", right=other._tree(),
                          predicates=[wire.expr(p) for p in predicates], suffix=suffix)

    def unique(self, subset: str | Sequence[str] | None = None, *, keep: str = "any",
               maintain_order: bool = False) -> RemoteFrame:
        return self._with("unique", subset=[subset] if isinstance(subset, str) else subset and list(subset),
                          keep=keep, maintain_order=maintain_order)

    def head(self, n: int = 5) -> RemoteFrame:
        return self._with("head", n=n)

    def limit(self, n: int = 5) -> RemoteFrame:
        return self._with("limit", n=n)

    def tail(self, n: int = 5) -> RemoteFrame:
        return self._with("tail", n=n)

    def slice(self, offset: int, length: int | None = None) -> RemoteFrame:
        return self._with("slice", offset=offset, length=_ALL_ROWS if length is None else length)

    def drop(self, *columns: str | Sequence[str]) -> RemoteFrame:
        return self._with("drop", columns=wire.names(columns))

    def rename(self, mapping: Mapping[str, str], *, strict: bool = True) -> RemoteFrame:
        return self._with("rename", mapping=dict(mapping), strict=strict)

    def cast(self, dtypes: Mapping[str, Any], *, strict: bool = True) -> RemoteFrame:
        return self._with("cast", dtypes={name: wire.dtype(t) for name, t in dtypes.items()}, strict=strict)

    def fill_null(self, value: Any = None, strategy: str | None = None, limit: int | None = None) -> RemoteFrame:
        if strategy is None and value is None:
            raise ValueError("give a value or a strategy")
        return self._with("fill_null", value=value, strategy=strategy, limit=limit)

    def fill_nan(self, value: Any) -> RemoteFrame:
        return self._with("fill_nan", value=value)

    def drop_nulls(self, subset: str | Sequence[str] | None = None) -> RemoteFrame:
        return self._with("drop_nulls", subset=[subset] if isinstance(subset, str) else subset and list(subset))

    def drop_nans(self, subset: str | Sequence[str] | None = None) -> RemoteFrame:
        return self._with("drop_nans", subset=[subset] if isinstance(subset, str) else subset and list(subset))

    def interpolate(self) -> RemoteFrame:
        return self._with("interpolate")

    def explode(self, columns: str | Sequence[str], *more_columns: str, empty_as_null: bool = False,
                keep_nulls: bool = True) -> RemoteFrame:
        return self._with("explode", columns=wire.names((columns,) + more_columns), empty_as_null=empty_as_null,
                          keep_nulls=keep_nulls)

    def unnest(self, columns: str | Sequence[str], *more_columns: str,
               separator: str | None = None) -> RemoteFrame:
        return self._with("unnest", columns=wire.names((columns,) + more_columns), separator=separator)

    def with_row_index(self, name: str = "index", offset: int = 0) -> RemoteFrame:
        return self._with("with_row_index", name=name, offset=offset)

    def top_k(self, k: int, *, by: IntoExpr | Sequence[IntoExpr],
              reverse: bool | Sequence[bool] = False) -> RemoteFrame:
        keys = by if isinstance(by, (list, tuple)) else [by]
        return self._with("top_k", k=k, by=[wire.key(b) for b in keys],
                          reverse=list(reverse) if isinstance(reverse, (list, tuple)) else reverse)

    def bottom_k(self, k: int, *, by: IntoExpr | Sequence[IntoExpr],
                 reverse: bool | Sequence[bool] = False) -> RemoteFrame:
        keys = by if isinstance(by, (list, tuple)) else [by]
        return self._with("bottom_k", k=k, by=[wire.key(b) for b in keys],
                          reverse=list(reverse) if isinstance(reverse, (list, tuple)) else reverse)

    def reverse(self) -> RemoteFrame:
        return self._with("reverse")

    def gather_every(self, n: int, offset: int = 0) -> RemoteFrame:
        return self._with("gather_every", n=n, offset=offset)

    def shift(self, n: int = 1) -> RemoteFrame:
        return self._with("shift", n=n)

    def pivot(self, on: str | Sequence[str], *, index: str | Sequence[str] | None = None,
              values: str | Sequence[str] | None = None, aggregate_function: str | None = None,
              separator: str = "_") -> RemoteFrame:
        def as_list(v: str | Sequence[str] | None) -> list[str]:
            return [v] if isinstance(v, str) else list(v or [])

        return self._with("pivot", on=as_list(on), index=as_list(index), values=as_list(values),
                          agg=aggregate_function or "first", separator=separator)

    def unpivot(self, on: str | Sequence[str] | None = None, *, index: str | Sequence[str] | None = None,
                variable_name: str | None = None, value_name: str | None = None) -> RemoteFrame:
        return self._with("unpivot", on=[on] if isinstance(on, str) else on and list(on),
                          index=[index] if isinstance(index, str) else list(index or []),
                          variable_name=variable_name, value_name=value_name)

    def group_by_dynamic(self, index_column: str, *, every: Any, period: Any = None, offset: Any = None,
                         closed: str = "left", label: str = "left",
                         group_by: str | Sequence[str] | None = None) -> GroupBy:
        return GroupBy(self, "resample", {
            "index": index_column, "every": wire.duration(every), "period": wire.duration(period),
            "offset": wire.duration(offset), "closed": closed, "label": label,
            "by": [group_by] if isinstance(group_by, str) else list(group_by or []),
        })

    def rolling(self, index_column: str, *, period: Any, offset: Any = None, closed: str = "right",
                group_by: str | Sequence[str] | None = None) -> GroupBy:
        return GroupBy(self, "group_by_rolling", {
            "index": index_column, "period": wire.duration(period), "offset": wire.duration(offset),
            "closed": closed, "by": [group_by] if isinstance(group_by, str) else list(group_by or []),
        })

    def upsample(self, time_column: str, *, every: Any, group_by: str | Sequence[str] | None = None,
                 maintain_order: bool = False) -> RemoteFrame:
        return self._with("upsample", time_column=time_column, every=wire.duration(every),
                          by=[group_by] if isinstance(group_by, str) else list(group_by or []),
                          maintain_order=maintain_order)

    def sample(self, n: int | None = None, *, fraction: float | None = None, with_replacement: bool = False,
               shuffle: bool = False, seed: int | None = None) -> RemoteFrame:
        return self._with("sample", n=n, fraction=fraction, with_replacement=with_replacement,
                          shuffle=shuffle, seed=seed)

    # -- outputs -------------------------------------------------------------------------

    def concat(self, *others: RemoteFrame, how: str = "vertical") -> RemoteFrame:
        """This frame with the others' rows appended (Polars' `pl.concat` of lazy frames)."""
        return self._with("concat", inputs=[o._tree() for o in others], how=how)

    def persist(self) -> RemoteFrame:
        """Runs the plan (one `pipeline` call) and returns a frame over the stored result.
        The result's handle is derived from the plan (and a scan's files), so a chain run before
        gets its handle back."""
        if not self.steps and isinstance(self.source, str):
            return self
        meta = self.client.action("pipeline", self._plan(), self.affinity)
        return type(self)(self.client, meta["handle"], meta.get("affinity") or self.affinity)

    def _sink(self, format: str, path: str | None, dataset: str | None, partition_by: Any,
              mode: str, **options: Any) -> Json:
        if (path is None) == (dataset is None):
            raise ValueError("give a path or a dataset")
        target: Json = {"format": format, "mode": mode, **{k: v for k, v in options.items() if v is not None}}
        if path is not None:
            target["path"] = path
        else:
            target["dataset"] = dataset
        if partition_by is not None:
            target["partition_by"] = [partition_by] if isinstance(partition_by, str) else list(partition_by)
        return self.client.action("sink", {**self._plan(), "sink": target}, self.affinity)

    def sink_parquet(self, path: str | None = None, *, dataset: str | None = None,
                     partition_by: str | Sequence[str] | None = None,
                     mode: str = "error_if_exists") -> Json:
        """Writes the result as Parquet under the worker's data root (or into a writable dataset),
        streaming; `partition_by` writes hive directories. Returns the files, rows and bytes written."""
        return self._sink("parquet", path, dataset, partition_by, mode)

    def sink_ipc(self, path: str | None = None, *, dataset: str | None = None,
                 partition_by: str | Sequence[str] | None = None, mode: str = "error_if_exists") -> Json:
        """Writes the result as Arrow IPC files; see `sink_parquet`."""
        return self._sink("ipc", path, dataset, partition_by, mode)

    def sink_csv(self, path: str | None = None, *, dataset: str | None = None,
                 partition_by: str | Sequence[str] | None = None, mode: str = "error_if_exists",
                 separator: str = ",", include_header: bool = True) -> Json:
        """Writes the result as CSV; see `sink_parquet`."""
        return self._sink("csv", path, dataset, partition_by, mode, separator=separator,
                          include_header=include_header)

    def collect(self) -> pl.DataFrame:
        """Runs the plan and returns the result as a polars DataFrame."""
        result = self.persist()
        return self.client.fetch(result.handle, result.affinity)

    def to_arrow(self) -> pa.Table:
        """Runs the plan and returns the result as a pyarrow Table."""
        result = self.persist()
        return self.client.fetch_arrow(result.handle, result.affinity)

    def collect_schema(self) -> pl.Schema:
        """The result's column names and types (runs the plan, as the result is then known)."""
        result = self.persist()
        return self.client.schema(result.handle, result.affinity)

    def explain(self) -> str:
        """The worker's optimised Polars plan for the pending steps."""
        meta = self.client.action("explain", self._plan(), self.affinity)
        return str(meta["plan"])


@dataclass(frozen=True)
class GroupBy:
    """A pending grouping: `.agg(...)` makes it a step."""

    frame: RemoteFrame
    op: str
    params: Json

    def agg(self, *aggs: IntoExpr | Sequence[IntoExpr], **named_aggs: Any) -> RemoteFrame:
        return self.frame._with(self.op, **self.params, aggs=wire.exprs(aggs, named_aggs))
