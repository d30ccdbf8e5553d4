"""Three polarway-grpc processes behind a real nginx, on a shared directory and on S3 (moto)."""

import json
import time

import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest_worker import Worker
from fleet import S3, Azurite, Nginx
from flightops import action, fetch, upload
from polars.testing import assert_frame_equal


def trades(n=2000) -> pl.DataFrame:
    return pl.DataFrame({
        "sym": [["AAPL", "MSFT", "GOOG", "AMZN"][i % 4] for i in range(n)],
        "qty": [(i * 7) % 100 for i in range(n)],
        "price": [100.0 + (i % 50) for i in range(n)],
    })


# 20 calls, each continuing from the previous result, with the same query in local Polars.
CHAIN = [
    ("filter", {"predicate": "qty > 5"}, lambda f: f.filter(pl.col("qty") > 5)),
    ("with_columns", {"columns": {"notional": "qty * price"}}, lambda f: f.with_columns(notional=pl.col("qty") * pl.col("price"))),
    ("sort", {"by": ["notional", "sym"], "descending": [True, False]}, lambda f: f.sort(["notional", "sym"], descending=[True, False])),
    ("head", {"n": 1500}, lambda f: f.head(1500)),
    ("select", {"columns": ["sym", "qty", "price", "notional"]}, lambda f: f.select("sym", "qty", "price", "notional")),
    ("filter", {"predicate": "sym <> 'GOOG'"}, lambda f: f.filter(pl.col("sym") != "GOOG")),
    ("with_columns", {"columns": {"q2": "qty * 2"}}, lambda f: f.with_columns(q2=pl.col("qty") * 2)),
    ("rename", {"mapping": {"q2": "double_qty"}}, lambda f: f.rename({"q2": "double_qty"})),
    ("cast", {"dtypes": {"qty": "f64"}}, lambda f: f.with_columns(pl.col("qty").cast(pl.Float64))),
    ("tail", {"n": 1000}, lambda f: f.tail(1000)),
    ("slice", {"offset": 10, "length": 900}, lambda f: f.slice(10, 900)),
    ("drop", {"columns": ["double_qty"]}, lambda f: f.drop("double_qty")),
    ("with_columns", {"columns": {"px": "price / 2"}}, lambda f: f.with_columns(px=pl.col("price") / 2)),
    ("filter", {"predicate": "px > 30"}, lambda f: f.filter(pl.col("px") > 30)),
    ("sort", {"by": ["sym", "notional", "qty", "px"]}, lambda f: f.sort(["sym", "notional", "qty", "px"])),
    ("unique", {"subset": ["sym", "qty"], "keep": "first"}, lambda f: f.unique(subset=["sym", "qty"], keep="first", maintain_order=True)),
    ("limit", {"n": 200}, lambda f: f.head(200)),
    ("with_columns", {"columns": {"bucket": "qty % 10"}}, lambda f: f.with_columns(bucket=pl.col("qty") % 10)),
    ("sort", {"by": ["bucket", "sym", "qty"]}, lambda f: f.sort(["bucket", "sym", "qty"])),
    ("head", {"n": 50}, lambda f: f.head(50)),
]


@pytest.fixture(params=["directory", "s3", "azure"])
def store_env(request, tmp_path):
    if request.param == "directory":
        yield {"POLARWAY_HANDLE_STORE": "external", "POLARWAY_STATE_DIR": str(tmp_path)}
        return
    server = S3() if request.param == "s3" else Azurite()
    try:
        env = server.env("fleet-test")
        if request.param == "s3":
            # No decoded cache: every input is copied to local scratch and scanned lazily.
            env.update(POLARWAY_CACHE_BYTES="0", POLARWAY_SCRATCH_DIR=str(tmp_path / "scratch"))
        yield env
    finally:
        server.stop()


def test_chain_through_nginx_spreads_over_workers_and_survives_restarts(store_env):
    workers = [Worker(**store_env) for _ in range(3)]
    nginx = Nginx([w.address for w in workers])
    try:
        client = flight.FlightClient(nginx.location)
        local = trades()
        handle = upload(client, "trades", local)["handle"]
        handles = [handle]
        expected = [local]
        for op, params, local_op in CHAIN:
            result = action(client, op, {"input": handle, **params})
            handle = result["handle"]
            handles.append(handle)
            local = local_op(local)
            expected.append(local)
            assert_frame_equal(fetch(client, handle), local, check_dtypes=False)
        counts = [w.persisted() for w in workers]
        assert sum(counts) == 21
        assert sum(1 for c in counts if c > 0) >= 2, f"calls landed on one worker: {counts}"

        # Each worker directly serves a handle another worker made.
        directs = [w.client() for w in workers]
        for d in directs:
            for h in handles:
                fetch(d, h)

        # Restart every worker; every handle is still there.
        for w in workers:
            w.stop()
        workers = [Worker(**store_env) for _ in range(3)]
        directs = [w.client() for w in workers]
        for i, (h, want) in enumerate(zip(handles, expected)):
            assert_frame_equal(fetch(directs[i % 3], h), want, check_dtypes=False)
    finally:
        nginx.stop()
        for w in workers:
            if w.proc.poll() is None:
                w.stop()


def test_affinity_header_keeps_a_chain_on_one_worker(tmp_path):
    env = {"POLARWAY_HANDLE_STORE": "external", "POLARWAY_STATE_DIR": str(tmp_path)}
    workers = [Worker(**env) for _ in range(3)]
    nginx = Nginx([w.address for w in workers])
    try:
        client = flight.FlightClient(nginx.location)
        first = upload(client, "trades", trades())
        before = [w.persisted() for w in workers]
        options = flight.FlightCallOptions(headers=[(b"x-polarway-affinity", first["affinity"].encode())])
        handle = first["handle"]
        for i in range(10):
            handle = action(client, "filter", {"input": handle, "predicate": f"qty > {i}"}, options)["handle"]
        grown = [w.persisted() - b for w, b in zip(workers, before)]
        assert sorted(grown) == [0, 0, 10], f"the chain stayed on one worker: {grown}"
    finally:
        nginx.stop()
        for w in workers:
            w.stop()


def test_a_stream_idle_longer_than_nginx_defaults_is_not_cut(tmp_path):
    """DoExchange whose client pauses 65 s (nginx's default body and read timeouts are 60 s)."""
    worker = Worker()
    nginx = Nginx([worker.address])
    try:
        client = flight.FlightClient(nginx.location)
        table = pa.table({"x": [1, 2, 3]})
        cmd = json.dumps({"steps": [{"op": "select", "columns": ["x * 10 AS y"]}]}).encode()
        writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(cmd))
        writer.begin(table.schema)
        time.sleep(65)
        writer.write_table(table)
        writer.done_writing()
        out = reader.read_all()
        assert out.column("y").to_pylist() == [10, 20, 30]
        writer.close()
    finally:
        nginx.stop()
        worker.stop()
