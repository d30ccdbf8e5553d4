"""Polarway client: remote Polars over Arrow Flight, written as Polars.

    import polars as pl
    import polarway

    pw = polarway.connect("grpc://127.0.0.1:50051")
    trades = pw.upload(polars_frame)             # a RemoteFrame, like a pl.LazyFrame
    out = (trades.filter(pl.col("qty") > 10)
                 .group_by("sym").agg(pl.col("qty").sum().alias("total"))
                 .collect())                     # one round trip, a pl.DataFrame

Chained calls build a plan on the client; `collect()` sends it as one `pipeline` action, whose
result is stored under a handle derived from the plan: the same chain again gets that handle
back without recomputing. Expressions travel as Polars' own JSON (`Expr.meta.serialize`); one
that cannot run on a worker (a Python function, a plugin) raises `UnshippableExpression` before
anything is sent. Supported Polars: see `SUPPORTED_POLARS`.

Every call is retried with exponential backoff and jitter when the service is UNAVAILABLE (a worker
restarting, a connection refused), and only when repeating it is safe: operations are keyed by
their inputs, so repeating one returns the same result; uploads carry an idempotency key; reads
repeat freely. Calls carry a deadline (30 s for actions, 120 s for streams by default) and the
affinity key of the chain they continue, which a load balancer hashes on. Given several endpoints
and no load balancer, the client picks one per affinity key by rendezvous hashing and moves to the
next when one is down.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.flight as flight

from .frame import GroupBy, RemoteFrame, affinity_of
from .wire import SUPPORTED_POLARS, Json, UnshippableExpression

__all__ = ["connect", "concat", "Client", "RemoteFrame", "GroupBy", "RetryPolicy", "UnshippableExpression",
           "SUPPORTED_POLARS", "AFFINITY_HEADER", "IDEMPOTENCY_HEADER"]

#: Bytes per uploaded record batch: a table goes up as many gRPC messages, each well under the
#: worker's message limit (64 MiB by default), however large the table.
_UPLOAD_BATCH_BYTES = 4 << 20

AFFINITY_HEADER = b"x-polarway-affinity"
IDEMPOTENCY_HEADER = b"x-polarway-idempotency-key"

T = TypeVar("T")


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter."""

    attempts: int = 6
    initial: float = 0.05
    maximum: float = 2.0
    multiplier: float = 2.0

    def delays(self) -> Iterable[float]:
        delay = self.initial
        for _ in range(self.attempts - 1):
            yield random.uniform(0, delay)
            delay = min(self.maximum, delay * self.multiplier)


# Signs that a call died in transport (a worker killed mid-call, a proxy resetting the stream)
# rather than being answered: the service never decided, so an idempotent call may be repeated.
_TRANSPORT_FAILURES = (
    "error in http transport",
    "rst_stream",
    "received http2 header with status: 50",
    "socket closed",
    "connection reset",
    "server disconnect",
    "failed to connect",
)


def _retryable(err: Exception) -> bool:
    if isinstance(err, flight.FlightUnavailableError):
        return True
    text = str(err).lower()
    if isinstance(err, (flight.FlightServerError, flight.FlightInternalError, OSError)) and any(
            sign in text for sign in _TRANSPORT_FAILURES):
        return True
    # RESOURCE_EXHAUSTED is retried only when the server says when to come back.
    return "retry-after" in text or "retry after" in text


class Client:
    """A connection to one Polarway service (or a list of workers without a load balancer)."""

    def __init__(
        self,
        locations: Sequence[str],
        *,
        action_timeout: float = 30.0,
        stream_timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        tls_root_certs: bytes | None = None,
        cert_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
    ):
        if not locations:
            raise ValueError("at least one location")
        self.locations = list(locations)
        self.action_timeout = action_timeout
        self.stream_timeout = stream_timeout
        self.retry = retry or RetryPolicy()
        self._auth = [(b"authorization", f"Bearer {token}".encode())] if token else []
        kwargs: dict[str, Any] = {}
        if tls_root_certs:
            kwargs["tls_root_certs"] = tls_root_certs
        if cert_chain:
            kwargs["cert_chain"] = cert_chain
            kwargs["private_key"] = private_key
        self._clients = {loc: flight.FlightClient(loc, **kwargs) for loc in self.locations}
        self._operations: dict[str, str] | None = None

    # -- routing -------------------------------------------------------------------------

    def _order(self, affinity: str | None) -> list[str]:
        """Endpoints to try, best first: rendezvous hashing on the affinity key."""
        if len(self.locations) == 1 or not affinity:
            start = random.randrange(len(self.locations))
            return self.locations[start:] + self.locations[:start]
        def score(loc: str) -> bytes:
            return hashlib.sha256(f"{affinity}|{loc}".encode()).digest()
        return sorted(self.locations, key=score, reverse=True)

    def _call(self, affinity: str | None, timeout: float, fn: Callable[[flight.FlightClient, flight.FlightCallOptions], T],
              extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> T:
        headers = list(extra_headers) + self._auth
        if affinity:
            headers.append((AFFINITY_HEADER, affinity.encode()))
        options = flight.FlightCallOptions(timeout=timeout, headers=headers)
        order = self._order(affinity)
        delays = iter(self.retry.delays())
        attempt = 0
        while True:
            location = order[attempt % len(order)]
            try:
                return fn(self._clients[location], options)
            except Exception as err:  # noqa: BLE001 - classified below
                if not _retryable(err):
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1

    # -- calls ---------------------------------------------------------------------------

    def action(self, op: str, body: Json, affinity: str | None = None) -> Json:
        """Runs one operation; safe to retry because results are keyed by their request."""
        payload = json.dumps(body).encode()

        def call(client: flight.FlightClient, options: flight.FlightCallOptions) -> Json:
            results = list(client.do_action(flight.Action(op, payload), options=options))
            answer: Json = json.loads(results[0].body.to_pybytes())
            return answer

        return self._call(affinity, self.action_timeout, call)

    def upload(self, frame: pl.DataFrame | pa.Table, name: str | None = None,
               idempotency_key: str | None = None) -> RemoteFrame:
        """Uploads a frame; an idempotency key (generated if not given) makes a retry safe."""
        table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        key = idempotency_key or uuid.uuid4().hex
        descriptor = flight.FlightDescriptor.for_path(name or "upload")

        def call(client: flight.FlightClient, options: flight.FlightCallOptions) -> Json:
            writer, reader = client.do_put(descriptor, table.schema, options=options)
            try:
                rows = max(1, _UPLOAD_BATCH_BYTES * table.num_rows // max(1, table.nbytes))
                writer.write_table(table, max_chunksize=rows)
                writer.done_writing()
                answer = reader.read()
            except Exception:
                writer.close()  # raises the call's own status when it has one
                raise
            if answer is None:
                writer.close()  # the call ended without an answer: surface its status
                raise flight.FlightUnavailableError("upload ended without an answer")
            writer.close()
            meta: Json = json.loads(answer.to_pybytes())
            return meta

        meta = self._call(None, self.stream_timeout, call, [(IDEMPOTENCY_HEADER, key.encode())])
        return RemoteFrame(self, meta["handle"], meta.get("affinity") or meta["handle"])

    def fetch(self, handle: str, affinity: str | None = None) -> pl.DataFrame:
        """Streams a result into a polars DataFrame."""
        frame = pl.from_arrow(self.fetch_arrow(handle, affinity))
        assert isinstance(frame, pl.DataFrame)
        return frame

    def fetch_arrow(self, handle: str, affinity: str | None = None) -> pa.Table:
        """Streams a result into a pyarrow Table."""
        ticket = flight.Ticket(handle.encode())
        return self._call(affinity, self.stream_timeout,
                          lambda client, options: client.do_get(ticket, options=options).read_all())

    def frame(self, handle: str, affinity: str | None = None) -> RemoteFrame:
        """A lazy frame over an existing handle."""
        return RemoteFrame(self, handle, affinity or handle)

    def table(self, name: str) -> RemoteFrame:
        """A lazy frame over the live result named `name` (a named upload, or the `name` action)."""
        def call(client: flight.FlightClient, options: flight.FlightCallOptions) -> Json:
            for info in client.list_flights(name.encode(), options=options):
                meta = json.loads(bytes(info.app_metadata)) if info.app_metadata else {}
                if meta.get("name") == name:
                    return meta
            raise KeyError(f"no live result is named {name!r}")

        meta = self._call(None, self.action_timeout, call)
        return RemoteFrame(self, meta["handle"], meta.get("affinity") or meta["handle"])

    def _read(self, op: str, path: str, params: Json) -> RemoteFrame:
        meta = self.action(op, {"path": path, **{k: v for k, v in params.items() if v is not None}})
        return RemoteFrame(self, meta["handle"], meta.get("affinity") or meta["handle"])

    def read_parquet(self, path: str, *, columns: Sequence[str] | None = None,
                     n_rows: int | None = None) -> RemoteFrame:
        """Reads a Parquet file under the worker's data root (`POLARWAY_DATA_DIR`)."""
        return self._read("read_parquet", path, {"columns": list(columns) if columns else None, "n_rows": n_rows})

    def read_ipc(self, path: str, *, columns: Sequence[str] | None = None,
                 n_rows: int | None = None) -> RemoteFrame:
        """Reads an Arrow IPC file under the worker's data root."""
        return self._read("read_ipc", path, {"columns": list(columns) if columns else None, "n_rows": n_rows})

    def read_csv(self, path: str, *, has_header: bool = True, separator: str = ",",
                 columns: Sequence[str] | None = None, n_rows: int | None = None) -> RemoteFrame:
        """Reads a CSV file under the worker's data root."""
        return self._read("read_csv", path, {"has_header": has_header, "separator": separator,
                                             "columns": list(columns) if columns else None, "n_rows": n_rows})

    def _scan(self, format: str, path: str, **options: Any) -> RemoteFrame:
        spec = {"format": format, "path": path, **{k: v for k, v in options.items() if v is not None}}
        source = {"scan": spec}
        return RemoteFrame(self, source, affinity_of(source))

    def scan_parquet(self, path: str, *, hive_partitioning: bool | None = None,
                     columns: Sequence[str] | None = None, n_rows: int | None = None) -> RemoteFrame:
        """A lazy scan of Parquet files under the worker's data root: a file, a directory or a glob
        (`sales/**/*.parquet`). Nothing is read until the plan runs; Polars pushes the plan's
        columns, filters, slices and hive partition filters into the reader."""
        return self._scan("parquet", path, hive_partitioning=hive_partitioning,
                          columns=list(columns) if columns else None, n_rows=n_rows)

    def scan_ipc(self, path: str, *, hive_partitioning: bool | None = None,
                 columns: Sequence[str] | None = None, n_rows: int | None = None) -> RemoteFrame:
        """A lazy scan of Arrow IPC files under the worker's data root; see `scan_parquet`."""
        return self._scan("ipc", path, hive_partitioning=hive_partitioning,
                          columns=list(columns) if columns else None, n_rows=n_rows)

    def scan_csv(self, path: str, *, has_header: bool = True, separator: str = ",",
                 null_values: Sequence[str] | None = None, schema_overrides: dict[str, Any] | None = None,
                 infer_schema_length: int | None = None, try_parse_dates: bool = False,
                 hive_partitioning: bool | None = None, columns: Sequence[str] | None = None,
                 n_rows: int | None = None) -> RemoteFrame:
        """A lazy scan of CSV files under the worker's data root; see `scan_parquet`.
        `schema_overrides` maps columns to Polars types (`pl.Int64`, or their names)."""
        from . import wire
        csv = {"has_header": has_header, "separator": separator, "try_parse_dates": try_parse_dates}
        if null_values:
            csv["null_values"] = list(null_values)
        if schema_overrides:
            csv["schema_overrides"] = {k: wire.dtype(v) for k, v in schema_overrides.items()}
        if infer_schema_length is not None:
            csv["infer_schema_length"] = infer_schema_length
        return self._scan("csv", path, hive_partitioning=hive_partitioning,
                          columns=list(columns) if columns else None, n_rows=n_rows, csv=csv)

    def dataset(self, name: str) -> RemoteFrame:
        """A lazy frame over a dataset the operator declared (`POLARWAY_DATASETS_FILE`)."""
        source = {"dataset": name}
        return RemoteFrame(self, source, affinity_of(source))

    def datasets(self) -> dict[str, Json]:
        """The datasets this caller may use: name -> description (path, format, writable...)."""
        def call(client: flight.FlightClient, options: flight.FlightCallOptions) -> dict[str, Json]:
            out = {}
            for info in client.list_flights(b"", options=options):
                meta = json.loads(bytes(info.app_metadata)) if info.app_metadata else {}
                if "dataset" in meta:
                    out[meta["dataset"]] = meta
            return out

        return self._call(None, self.action_timeout, call)

    def operations(self) -> dict[str, str]:
        """The worker's actions (`ListActions`): name -> example body. Cached per client."""
        if self._operations is None:
            def call(client: flight.FlightClient, options: flight.FlightCallOptions) -> dict[str, str]:
                return {a.type: a.description for a in client.list_actions(options=options)}
            self._operations = self._call(None, self.action_timeout, call)
        return self._operations

    def schema(self, handle: str, affinity: str | None = None) -> pl.Schema:
        """A stored result's schema, as Polars types."""
        descriptor = flight.FlightDescriptor.for_path(handle)

        def call(client: flight.FlightClient, options: flight.FlightCallOptions) -> Any:
            return client.get_schema(descriptor, options=options).schema

        schema = self._call(affinity, self.action_timeout, call)
        empty = pl.from_arrow(schema.empty_table())
        assert isinstance(empty, pl.DataFrame)
        return empty.schema

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def concat(frames: Sequence[RemoteFrame], how: str = "vertical") -> RemoteFrame:
    """The frames' rows one after another, as one plan (Polars' `pl.concat` of lazy frames)."""
    if not frames:
        raise ValueError("concat needs at least one frame")
    first, *rest = frames
    return first.concat(*rest, how=how) if rest else first


def connect(location: str | Sequence[str], **options: Any) -> Client:
    """Connects to a service (`grpc://host:port`, `grpc+tls://...`) or to a list of workers."""
    locations = [location] if isinstance(location, str) else list(location)
    return Client(locations, **options)
