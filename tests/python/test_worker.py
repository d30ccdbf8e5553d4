"""pyarrow and Polars from PyPI against the real polarway-grpc binary."""

import json
import os
import pathlib
import re
import subprocess
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from conftest_worker import Worker
from flightops import action, fetch, upload
from polars.testing import assert_frame_equal

ROOT = pathlib.Path(__file__).resolve().parents[2]


def trades() -> pl.DataFrame:
    return pl.DataFrame({
        "sym": ["AAPL", "MSFT", "AAPL", "GOOG", "MSFT", "AAPL"],
        "qty": [10, 25, 30, 5, 40, 15],
        "price": [100.0, 250.5, 101.0, 140.0, 251.0, 99.5],
    })


def test_upload_pipeline_doget_matches_local_polars(client):
    df = trades()
    h = upload(client, "trades", df)["handle"]
    result = action(client, "pipeline", {"input": h, "steps": [
        {"op": "filter", "predicate": "qty > 10"},
        {"op": "with_columns", "columns": {"notional": "qty * price"}},
        {"op": "group_by", "by": ["sym"], "aggs": ["sum(notional) AS total", "count(qty) AS n"]},
        {"op": "sort", "by": ["sym"]},
    ]})
    got = fetch(client, result["handle"])
    want = (df.lazy().filter(pl.col("qty") > 10)
            .with_columns(notional=pl.col("qty") * pl.col("price"))
            .group_by("sym").agg(total=pl.col("notional").sum(), n=pl.col("qty").count())
            .sort("sym").collect())
    assert_frame_equal(got, want, check_dtypes=False)
    assert result["num_rows"] == want.height
    assert [c["name"] for c in result["schema"]] == ["sym", "total", "n"]


def test_results_arrive_whole_from_any_offset_and_dictionaries_as_their_values(client):
    # DoGet sends a result's own buffers: a slice starting mid-byte of its validity and boolean
    # bitmaps, and strings long and short, must arrive exactly as Polars has them.
    n = 20_000
    df = pl.DataFrame({
        "i": pl.Series([None if i % 7 == 0 else i for i in range(n)], dtype=pl.Int64),
        "f": [i / 3 for i in range(n)],
        "b": [None if i % 5 == 0 else i % 3 == 0 for i in range(n)],
        "s": [None if i % 11 == 0 else ("x" * (i % 20)) + str(i) for i in range(n)],
    })
    h = upload(client, "mixed", df)["handle"]
    for offset, length in [(3, 9_001), (12_345, 7), (n - 1, 1), (5, 0)]:
        part = action(client, "slice", {"input": h, "offset": offset, "length": length})
        assert_frame_equal(fetch(client, part["handle"]), df.slice(offset, length))

    # A dictionary column is stored as a categorical and sent back as its values, as
    # arrow-flight's encoder hydrates it.
    table = pa.table({"c": pa.array(["red", "blue", None, "red"] * 1000).dictionary_encode(), "x": range(4000)})
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("dict"), table.schema)
    writer.write_table(table)
    writer.done_writing()
    h = json.loads(reader.read().to_pybytes())["handle"]
    writer.close()
    got = client.do_get(flight.Ticket(h.encode())).read_all()
    assert not pa.types.is_dictionary(got.schema.field("c").type)
    assert got.column("c").cast(pa.string()).to_pylist() == ["red", "blue", None, "red"] * 1000
    assert got.column("x").to_pylist() == list(range(4000))


def test_list_actions_flights_and_flight_info(client):
    names = {a.type for a in client.list_actions()}
    assert {"filter", "group_by", "join", "pipeline", "pin", "RenewFlightEndpoint"} <= names

    h = upload(client, "trades", trades())["handle"]
    flights = list(client.list_flights())
    assert len(flights) == 1
    assert json.loads(flights[0].app_metadata)["name"] == "trades"

    info = client.get_flight_info(flight.FlightDescriptor.for_path(h))
    assert info.total_records == 6
    assert info.schema.names == ["sym", "qty", "price"]
    [endpoint] = info.endpoints
    assert endpoint.ticket.ticket == h.encode()
    assert endpoint.expiration_time is not None
    assert endpoint.expiration_time.value > datetime.now(timezone.utc).timestamp() * 1e9
    assert_frame_equal(pl.from_arrow(client.do_get(endpoint.ticket).read_all()), trades())


def test_errors_carry_grpc_status(client):
    h = upload(client, "trades", trades())["handle"]
    with pytest.raises(pa.ArrowInvalid, match="nope"):
        action(client, "filter", {"input": h, "predicate": "nope > 1"})
    with pytest.raises(pa.ArrowInvalid, match="unknown operation"):
        action(client, "frobnicate", {"input": h})
    with pytest.raises(Exception, match="not found"):
        fetch(client, "pw1_" + "0" * 32)


def test_external_store_shared_by_two_workers(tmp_path):
    a = Worker(POLARWAY_HANDLE_STORE="external", POLARWAY_STATE_DIR=str(tmp_path))
    b = Worker(POLARWAY_HANDLE_STORE="external", POLARWAY_STATE_DIR=str(tmp_path))
    try:
        ca, cb = a.client(), b.client()
        h = upload(ca, "trades", trades())["handle"]
        top = action(cb, "sort", {"input": h, "by": ["qty"], "descending": True})
        assert_frame_equal(fetch(ca, top["handle"]), trades().sort("qty", descending=True))
    finally:
        a.stop()
        b.stop()


def test_readme_sessions_run_one_after_another_against_one_worker(tmp_path):
    # The worker starts as the README's shell block says, on a data root of its own; every
    # ```python block is then a runnable session (```py marks snippets that need a deployment).
    readme = (ROOT / "README.md").read_text()
    lake = str(tmp_path / "lake")
    setup = re.search(r"```sh\nmkdir -p /tmp/polarway-lake\n(.*?)\n(.*?)\n```", readme, re.S)
    assert setup, "the Polars session starts a worker on a data root"
    os.makedirs(lake)
    subprocess.run(setup.group(1).replace("/tmp/polarway-lake", lake), shell=True, check=True, executable="/bin/bash")
    env = dict(re.findall(r"(POLARWAY_\w+)=(\S+)", setup.group(2)))
    worker = Worker(**{k: v.replace("/tmp/polarway-lake", lake) for k, v in env.items()})
    try:
        blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
        assert len(blocks) >= 3, "README has the Polars, pyarrow and Flight SQL sessions"
        assert "import polarway" in blocks[0] and "scan_parquet" in blocks[0], "the Polars session comes first, with a scan"
        for i, block in enumerate(blocks):
            code = block.replace("grpc://127.0.0.1:50051", worker.location).replace("/tmp/polarway-lake", lake)
            exec(compile(code, f"README.md block {i + 1}", "exec"), {})
    finally:
        worker.stop()
