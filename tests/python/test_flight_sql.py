"""Flight SQL from ADBC (PyPI's adbc-driver-flightsql) against the real binary: metadata calls,
queries equal to Polars, prepared statements, ingest, refusals, tenants, view types, SQL and
DataFrame actions on the same datasets, across workers."""

import hashlib
import json

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import polars as pl
import pyarrow as pa
import pytest
from conftest_worker import Worker
from flightops import action, fetch, upload
from polars.testing import assert_frame_equal
from sqlwire import statement_query


def trades():
    return pl.DataFrame({
        "sym": ["AAPL", "MSFT", "GOOG", "AAPL", "MSFT", "AAPL"],
        "qty": [10, 20, 30, 40, 50, 60],
        "price": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5],
    })


def companies():
    return pl.DataFrame({"sym": ["AAPL", "MSFT", "GOOG"], "name": ["Apple", "Microsoft", "Alphabet"]})


def connect(worker, token=None, **options):
    kwargs = {}
    if token:
        kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    kwargs.update(options)
    return flight_sql.connect(worker.location, db_kwargs=kwargs, autocommit=True)


def query(conn, sql, parameters=None) -> pl.DataFrame:
    with conn.cursor() as cur:
        cur.execute(sql, parameters)
        return pl.from_arrow(cur.fetch_arrow_table())


@pytest.fixture
def loaded(worker):
    client = worker.client()
    upload(client, "trades", trades())
    upload(client, "companies", companies())
    return worker


def test_metadata_calls(loaded):
    with connect(loaded) as conn:
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "Polarway"
        assert "TABLE" in conn.adbc_get_table_types()
        objects = conn.adbc_get_objects().read_all().to_pylist()
        assert [c["catalog_name"] for c in objects] == ["polarway"]
        schemas = objects[0]["catalog_db_schemas"]
        assert [s["db_schema_name"] for s in schemas] == ["public"]
        tables = {t["table_name"]: t for t in schemas[0]["db_schema_tables"]}
        assert {"trades", "companies"} <= set(tables)
        assert [c["column_name"] for c in tables["trades"]["table_columns"]] == ["sym", "qty", "price"]
        schema = conn.adbc_get_table_schema("trades")
        assert schema.names == ["sym", "qty", "price"]
        assert schema.field("qty").type == pa.int64()


def test_join_and_aggregation_equal_polars(loaded):
    sql = """
        SELECT c.name, t.sym, SUM(t.qty) AS total, AVG(t.price) AS avg_price, COUNT(*) AS n
        FROM trades t JOIN companies c ON t.sym = c.sym
        WHERE t.qty >= 20
        GROUP BY c.name, t.sym
        ORDER BY total DESC
    """
    expected = (
        trades().join(companies(), on="sym").filter(pl.col("qty") >= 20)
        .group_by("name", "sym")
        .agg(total=pl.col("qty").sum(), avg_price=pl.col("price").mean(), n=pl.len())
        .sort("total", descending=True)
    )
    with connect(loaded) as conn:
        got = query(conn, sql)
    assert_frame_equal(got, expected, check_dtypes=False)


def test_prepared_statement_with_parameters(loaded):
    with connect(loaded) as conn:
        for low, sym in ((25, "AAPL"), (5, "MSFT")):
            got = query(conn, "SELECT qty FROM trades WHERE qty > ? AND sym = ? ORDER BY qty", (low, sym))
            want = trades().filter((pl.col("qty") > low) & (pl.col("sym") == sym)).select("qty")
            assert_frame_equal(got, want, check_dtypes=False)
        with conn.cursor() as cur:
            cur.adbc_prepare("SELECT price FROM trades WHERE qty = $1")
            schema = pa.schema(cur.adbc_statement.get_parameter_schema())
            assert schema.names == ["$1"]


def test_ingest_then_query(worker):
    table = pa.table({"k": [1, 2, 3], "v": ["a", "b", "c"]})
    with connect(worker) as conn:
        with conn.cursor() as cur:
            assert cur.adbc_ingest("ingested", table, mode="create") == 3
            with pytest.raises(adbc_driver_manager.Error, match="(?i)exists"):
                cur.adbc_ingest("ingested", table, mode="create")
            assert cur.adbc_ingest("ingested", table, mode="append") == 3
        got = query(conn, "SELECT k, COUNT(*) AS n FROM ingested GROUP BY k ORDER BY k")
        assert got.to_dict(as_series=False) == {"k": [1, 2, 3], "n": [2, 2, 2]}
        with conn.cursor() as cur:
            cur.adbc_ingest("ingested", table.slice(0, 1), mode="replace")
        assert query(conn, "SELECT COUNT(*) AS n FROM ingested")["n"].to_list() == [1]


@pytest.mark.parametrize("sql", [
    "CREATE EXTERNAL TABLE leak (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
    "COPY (SELECT 1 AS x) TO '/tmp/polarway-copy-test.csv'",
    "COPY trades TO '/tmp/polarway-copy-test.parquet' STORED AS PARQUET",
    "INSERT INTO trades VALUES ('X', 1, 1.0)",
    "CREATE TABLE t AS SELECT 1 AS x",
    "DROP TABLE trades",
    "SET datafusion.execution.target_partitions = 1",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "CREATE VIEW v AS SELECT 1",
])
def test_ddl_dml_and_file_access_are_refused(loaded, sql):
    with connect(loaded) as conn:
        with pytest.raises(adbc_driver_manager.Error) as err:
            query(conn, sql)
        assert err.value.status_code == adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT, err.value
        # The worker is fine and the data untouched.
        assert query(conn, "SELECT COUNT(*) AS n FROM trades")["n"].to_list() == [6]
    import os
    assert not os.path.exists("/tmp/polarway-copy-test.csv")


def test_updates_are_refused(loaded):
    with connect(loaded) as conn:
        with conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error, match="(?i)not accepted|invalid"):
                cur.adbc_statement.set_sql_query("DELETE FROM trades")
                cur.adbc_statement.execute_update()


def test_tenants_see_only_their_tables(tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({
        "signing_key": "a-long-shared-signing-key-for-tests",
        "tokens": [{"tenant": "acme", "sha256": hashlib.sha256(b"acme-token").hexdigest()},
                   {"tenant": "globex", "sha256": hashlib.sha256(b"globex-token").hexdigest()}],
    }))
    worker = Worker(POLARWAY_AUTH_TOKENS_FILE=str(tokens))
    try:
        with connect(worker, "acme-token") as acme, connect(worker, "globex-token") as globex:
            with acme.cursor() as cur:
                cur.adbc_ingest("secret", pa.table({"x": [42]}), mode="create")
            with pytest.raises(adbc_driver_manager.Error, match="(?i)not found|secret"):
                query(globex, "SELECT * FROM secret")
            names = [t["table_name"] for c in globex.adbc_get_objects().read_all().to_pylist()
                     for s in c["catalog_db_schemas"] for t in s["db_schema_tables"] or []]
            assert "secret" not in names
            # The same name in another namespace is another table.
            with globex.cursor() as cur:
                cur.adbc_ingest("secret", pa.table({"x": [7]}), mode="create")
            assert query(acme, "SELECT x FROM secret")["x"].to_list() == [42]
            assert query(globex, "SELECT x FROM secret")["x"].to_list() == [7]
        with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated|auth"):
            with connect(worker) as anonymous:
                query(anonymous, "SELECT 1")
    finally:
        worker.stop()


def test_view_types_can_be_downcast_per_session(loaded):
    header = adbc_driver_flightsql.DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + "x-polarway-view-types"
    with connect(loaded) as conn:
        kept = conn.cursor()
        kept.execute("SELECT sym FROM trades")
        assert kept.fetch_arrow_table().schema.field("sym").type == pa.string_view()
        kept.close()
    for value, want in (("utf8", pa.string()), ("large_utf8", pa.large_string())):
        with connect(loaded, **{header: value}) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT sym, qty FROM trades")
                table = cur.fetch_arrow_table()
                assert table.schema.field("sym").type == want
                assert table.column("sym").to_pylist() == trades()["sym"].to_list()


def test_sql_results_are_handles_any_worker_serves(tmp_path):
    env = {"POLARWAY_HANDLE_STORE": "external", "POLARWAY_STATE_DIR": str(tmp_path)}
    a, b = Worker(**env), Worker(**env)
    try:
        ca, cb = a.client(), b.client()
        upload(ca, "trades", trades())
        info = ca.get_flight_info(statement_query("SELECT sym, SUM(qty) AS total FROM trades GROUP BY sym"))
        handle = info.endpoints[0].ticket.ticket.decode()
        assert handle.startswith("pw1_")
        # Worker B streams it, and continues from it with a DataFrame action.
        want = trades().group_by("sym").agg(total=pl.col("qty").sum())
        assert_frame_equal(fetch(cb, handle).sort("sym"), want.sort("sym"), check_dtypes=False)
        top = action(cb, "filter", {"input": handle, "predicate": "total > 50"})["handle"]
        # A DataFrame result named on B is a table for SQL on A.
        action(cb, "name", {"handle": top, "name": "big_symbols"})
        with connect(a) as conn:
            got = query(conn, "SELECT sym FROM big_symbols ORDER BY sym")
        assert got["sym"].to_list() == sorted(want.filter(pl.col("total") > 50)["sym"].to_list())
    finally:
        a.stop()
        b.stop()
