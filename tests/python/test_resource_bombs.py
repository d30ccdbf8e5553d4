"""Requests that would take the worker down are refused with RESOURCE_EXHAUSTED before they run,
and the worker keeps serving what it stored. Against the real binary, because what it survives
depends on the process: its threads' stacks and the machine's memory.

- Expressions as deep as the worker accepts run and give the right answer; deeper ones are
  refused before any parser sees them (a chain of 600 `+` once overflowed a 2 MiB stack and
  aborted the process).
- A join whose keys repeat on both sides is refused by the pairs it would match (100k x 100k
  rows with one key once took all the machine's memory).
- Functions that make values larger than their inputs are tried on one row first
  (`lpad(s, 100000000)` on 1,000 rows once took all the machine's memory).
"""

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import polars as pl
import pyarrow as pa
import pytest
from conftest_worker import Worker
from flightops import action, fetch, upload
from polars.testing import assert_frame_equal

MAX_DEPTH = 1000  # src/depth.rs


def frame():
    return pl.DataFrame({"qty": [1, 2, 3, 4], "sym": ["A", "B", "C", "D"]})


def plus_chain(terms):
    """`qty + qty + ... > 0` with `terms` operators in all."""
    return "qty" + " + qty" * (terms - 1) + " > 0"


def test_the_deepest_accepted_expressions_run(client):
    h = upload(client, "t", frame())["handle"]
    # A chain of MAX_DEPTH operators: MAX_DEPTH - 1 additions and the comparison.
    kept = action(client, "filter", {"input": h, "predicate": plus_chain(MAX_DEPTH)})
    assert kept["num_rows"] == 4
    total = action(client, "with_columns", {"input": h, "columns": {"t": "qty" + " + qty" * (MAX_DEPTH - 1)}})
    assert fetch(client, total["handle"])["t"].to_list() == [q * MAX_DEPTH for q in [1, 2, 3, 4]]
    # 500 alternatives joined by OR: 500 comparisons and 499 ORs.
    either = " OR ".join(f"qty = {i}" for i in range(2, 502))
    assert action(client, "filter", {"input": h, "predicate": either})["num_rows"] == 3
    # CASE nests one level per branch; each branch counts WHEN, = and THEN.
    branches = " ".join(f"WHEN qty = {i} THEN {i * 10}" for i in range(300))
    cased = action(client, "with_columns", {"input": h, "columns": {"c": f"CASE {branches} ELSE -1 END"}})
    assert fetch(client, cased["handle"])["c"].to_list() == [10, 20, 30, 40]
    # Long flat lists are not deep: 20,000 alternatives in IN (...).
    listed = action(client, "filter", {"input": h, "predicate": f"qty IN ({', '.join(str(-i) for i in range(20_000))}, 3)"})
    assert fetch(client, listed["handle"])["qty"].to_list() == [3]


def test_deeper_expressions_are_refused_and_stored_data_survives(worker, client):
    h = upload(client, "t", frame())["handle"]
    for body in [
        {"input": h, "predicate": plus_chain(MAX_DEPTH + 1)},
        {"input": h, "predicate": plus_chain(30_000)},
        {"input": h, "predicate": " OR ".join(f"qty = {i}" for i in range(10_000))},
        {"input": h, "predicate": "CASE " + " ".join(f"WHEN qty = {i} THEN true" for i in range(10_000)) + " END"},
    ]:
        with pytest.raises(pa.ArrowException, match=r"(?s)resource exhausted.*`predicate`: nests up to \d+ operators deep; the limit is 1000"):
            action(client, "filter", body)
    with pytest.raises(pa.ArrowException, match="`aggs`: nests up to"):
        action(client, "group_by", {"input": h, "by": ["sym"], "aggs": ["sum(" + "qty + " * 2_000 + "qty) AS s"]})
    assert worker.proc.poll() is None
    assert_frame_equal(fetch(client, h), frame())


def test_flight_sql_queries_are_bounded_the_same_way(loaded_sql):
    worker, conn = loaded_sql
    with conn.cursor() as cur:
        cur.execute("SELECT 1" + " + 1" * (MAX_DEPTH - 1) + " AS n")
        assert cur.fetchall() == [(MAX_DEPTH,)]
        cur.execute("SELECT " + ", ".join(f"qty + {i} AS c{i}" for i in range(3_000)) + " FROM t")
        assert len(cur.fetch_arrow_table().schema) == 3_000, "wide queries are not deep"
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match=r"`query`: nests up to 10000 operators deep"):
            cur.execute("SELECT 1" + " + 1" * 10_000)
    # An expanding function is tried for one row and the rows counted: 4 rows of 2 GB each
    # would pass the query's 4 GiB budget, and are refused before one batch is made.
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match=r"(?s)query result would take about \d+ bytes; the limit is 4294967296 \(POLARWAY_MAX_SQL_MEMORY_BYTES\).*ResourceExhausted"):
            cur.execute("SELECT lpad(sym, 2000000000, 'x') AS p FROM t")
    with conn.cursor() as cur:
        cur.execute("SELECT lpad(sym, 100, 'x') AS p FROM t WHERE qty > 1")
        assert [len(p) for (p,) in cur.fetchall()] == [100] * 3
    assert worker.proc.poll() is None


@pytest.fixture
def loaded_sql(worker):
    upload(worker.client(), "t", frame())
    conn = flight_sql.connect(worker.location, autocommit=True)
    yield worker, conn
    conn.close()


def test_joins_are_refused_by_the_pairs_they_would_match(client):
    n = 100_000
    one_key = upload(client, "a", pl.DataFrame({"k": [1] * n, "v": list(range(n))}))["handle"]
    unique = upload(client, "b", pl.DataFrame({"k": list(range(n)), "w": list(range(n))}))["handle"]
    with pytest.raises(pa.ArrowException, match=r"inner join would produce 10000000000 rows; the limit is 100000000 \(POLARWAY_MAX_JOIN_ROWS\)"):
        action(client, "join", {"left": one_key, "right": one_key, "on": ["k"], "how": "inner"})
    # The sides' product is the same, but each left row matches one right row at most.
    joined = action(client, "join", {"left": one_key, "right": unique, "on": ["k"], "how": "left"})
    assert joined["num_rows"] == n
    assert fetch(client, one_key).height == n


def test_expanding_functions_are_tried_on_one_row_first():
    w = Worker(POLARWAY_MAX_RESULT_BYTES=str(64 << 20))
    try:
        client = w.client()
        h = upload(client, "t", pl.DataFrame({"sym": ["ab"] * 1_000}))["handle"]
        for column in ["lpad(sym, 100000000, 'x')", "replace(sym, 'a', '" + "b" * 100_000 + "')",
                       "'" + "b" * 100_000 + "'"]:
            with pytest.raises(pa.ArrowException, match=r"result would take about \d+ bytes; the limit is 67108864 \(POLARWAY_MAX_RESULT_BYTES\)"):
                action(client, "with_columns", {"input": h, "columns": {"x": column}})
        padded = action(client, "with_columns", {"input": h, "columns": {"x": "lpad(sym, 1000, 'x')"}})
        assert fetch(client, padded["handle"])["x"].str.len_bytes().to_list() == [1000] * 1_000
        assert w.proc.poll() is None
        assert fetch(client, h).height == 1_000
    finally:
        w.stop()
