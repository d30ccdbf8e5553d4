"""Data where it lives: scans of a local or S3 data root as plan leaves, named datasets shared by
Polars and SQL, plan trees, streaming sinks, and TPC-H (SF 0.1, all 22 queries, both forms)
against local Polars and DuckDB on the same files."""

import hashlib
import json
import os
import pathlib
import re
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import duckdb
import polars as pl
import polarway
import pyarrow.flight as flight
import pytest
from conftest_worker import Worker
from fleet import S3, Nginx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benches"))
import tpch  # noqa: E402

SCALE = 0.1


@pytest.fixture(scope="module")
def tpch_files(tmp_path_factory):
    return tpch.generate(SCALE, tmp_path_factory.mktemp("tpch"))


@pytest.fixture(scope="module")
def duck(tpch_files):
    con = duckdb.connect()
    for table in tpch.TABLES:
        con.execute(f"create view {table} as select * from read_parquet('{tpch_files}/{table}.parquet')")
    return con


def local_root(tmp_path, tpch_files, **env):
    """A worker whose data root holds the TPC-H files under `tpch/`, declared as datasets."""
    root = tmp_path / "data"
    (root / "tpch").mkdir(parents=True)
    for table in tpch.TABLES:
        os.link(tpch_files / f"{table}.parquet", root / "tpch" / f"{table}.parquet")
    datasets = tpch.datasets_file(tmp_path / "datasets.json", prefix="tpch/")
    return Worker(POLARWAY_DATA_DIR=str(root), POLARWAY_DATASETS_FILE=str(datasets), **env), root


def sql(location, query, token=None):
    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"} if token else {}
    with flight_sql.connect(location, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(query)
        return pl.from_arrow(cur.fetch_arrow_table())


def run_tpch(pw, location, duck, tpch_files, scan_prefix):
    """All 22 queries in both forms; returns the failures."""
    local = lambda name: pl.scan_parquet(tpch_files / f"{name}.parquet")  # noqa: E731
    remote = lambda name: pw.scan_parquet(f"{scan_prefix}{name}.parquet")  # noqa: E731
    failures = []
    for n in range(1, 23):
        try:
            tpch.assert_same(tpch.POLARS[n](remote).collect(), tpch.POLARS[n](local).collect(), f"Q{n} polars")
        except Exception as e:  # noqa: BLE001 - every query is reported
            failures.append(f"Q{n} polars: {e}")
        try:
            want = pl.from_arrow(duck.sql(tpch.SQL[n]).to_arrow_table())
            tpch.assert_same(sql(location, tpch.SQL[n]), want, f"Q{n} sql")
        except Exception as e:  # noqa: BLE001
            failures.append(f"Q{n} sql: {e}")
    return failures


def test_tpch_on_a_local_data_root(tmp_path, tpch_files, duck):
    worker, _ = local_root(tmp_path, tpch_files)
    try:
        pw = polarway.connect(worker.location)
        failures = run_tpch(pw, worker.location, duck, tpch_files, "tpch/")
        assert not failures, "\n".join(failures)
    finally:
        worker.stop()


def test_tpch_on_s3_behind_nginx(tmp_path, tpch_files, duck):
    s3 = S3()
    workers, nginx = [], None
    try:
        for table in tpch.TABLES:
            s3.put(f"lake/tpch/{table}.parquet", (tpch_files / f"{table}.parquet").read_bytes())
        datasets = tpch.datasets_file(tmp_path / "datasets.json", prefix="tpch/")
        env = {**s3.env("state"), "POLARWAY_DATA_URL": f"s3://{s3.bucket}/lake", "POLARWAY_DATASETS_FILE": str(datasets)}
        workers = [Worker(**env), Worker(**env)]
        nginx = Nginx([w.address for w in workers])
        pw = polarway.connect(nginx.location)
        failures = run_tpch(pw, nginx.location, duck, tpch_files, "tpch/")
        assert not failures, "\n".join(failures)
    finally:
        if nginx:
            nginx.stop()
        for w in workers:
            w.stop()
        s3.stop()


def sales(year):
    return pl.DataFrame({"region": ["eu", "us", "eu"], "amount": [float(year), 2.0, 3.0], "day": [1, 2, 3]})


def test_hive_partition_pruning_on_s3_reads_only_the_matching_partitions(tmp_path):
    s3 = S3(log=tmp_path / "moto.log")
    worker = None
    try:
        for year in range(2018, 2025):
            path = tmp_path / f"{year}.parquet"
            sales(year).write_parquet(path)
            s3.put(f"lake/sales/year={year}/part-0.parquet", path.read_bytes())
        datasets = tmp_path / "datasets.json"
        datasets.write_text(json.dumps({"sales": {"path": "sales", "format": "parquet", "hive_partitioning": True}}))
        worker = Worker(**s3.env("state"), POLARWAY_DATA_URL=f"s3://{s3.bucket}/lake", POLARWAY_DATA_WRITABLE="true",
                        POLARWAY_DATASETS_FILE=str(datasets))
        pw = polarway.connect(worker.location)
        frame = pw.scan_parquet("sales", hive_partitioning=True).filter(pl.col("year") == 2024)
        assert "2024" in frame.explain()
        before = s3.requests()
        got = frame.select("year", "amount").sort("amount").collect()
        assert got["year"].to_list() == [2024, 2024, 2024]
        # The server's log: only 2024's file is read for data. Polars reads the first file's
        # footer (2018) once to learn the schema.
        gets = [re.search(r"year=(\d+)", r).group(1) for r in s3.requests()[len(before):]
                if r.startswith("GET /polarway/lake/sales/year=")]
        assert set(gets) <= {"2018", "2024"} and "2024" in gets and gets.count("2018") <= 1, gets
        # Without the filter every partition is read.
        before = s3.requests()
        total = pw.scan_parquet("sales", hive_partitioning=True).group_by("year").agg(pl.len()).collect()
        assert total.height == 7
        gets = {re.search(r"year=(\d+)", r).group(1) for r in s3.requests()[len(before):]
                if r.startswith("GET /polarway/lake/sales/year=")}
        assert gets == {str(y) for y in range(2018, 2025)}
        # SQL prunes the dataset's partitions too (DataFusion's listing table); the table's
        # columns come from the first file's footer, as in Polars.
        before = s3.requests()
        got = sql(worker.location, "SELECT year, sum(amount) AS total FROM sales WHERE year = 2022 GROUP BY year")
        assert got["year"].to_list() == [2022] and got["total"].to_list() == [2027.0]
        gets = [re.search(r"year=(\d+)", r).group(1) for r in s3.requests()[len(before):]
                if r.startswith("GET /polarway/lake/sales/year=")]
        assert set(gets) <= {"2018", "2022"} and "2022" in gets and gets.count("2018") <= 2, gets
        # A sink back into the lake, partitioned; a retry of it writes nothing new.
        recent = pw.scan_parquet("sales", hive_partitioning=True).filter(pl.col("year") >= 2023)
        first = recent.sink_parquet("out/recent", partition_by="region")
        assert first["num_rows"] == 6
        keys = lambda: sorted(k for k in s3.keys("lake/out/"))  # noqa: E731
        written = keys()
        assert sorted(f["path"] for f in first["files"]) == [k.removeprefix("lake/") for k in written if "/recent/" in k]
        assert recent.sink_parquet("out/recent", partition_by="region") == first
        assert keys() == written, "no duplicate and no temporary objects"
        back = pw.scan_parquet("out/recent", hive_partitioning=True).collect()
        assert back.height == 6 and set(back["region"]) == {"eu", "us"}
    finally:
        if worker:
            worker.stop()
        s3.stop()


def test_sinks_round_trip_and_retries_leave_no_duplicates(tmp_path, tpch_files):
    worker, root = local_root(tmp_path, tpch_files, POLARWAY_DATA_WRITABLE="true")
    try:
        pw = polarway.connect(worker.location)
        orders = pw.scan_parquet("tpch/orders.parquet").filter(pl.col("o_orderdate").dt.year() >= 1995)
        first = orders.sink_parquet("out/orders", partition_by="o_orderstatus")
        assert first["num_rows"] == orders.collect().height > 0
        def written():
            return sorted(p.relative_to(root).as_posix() for p in (root / "out").rglob("*")
                          if p.is_file() and not p.name.startswith("_"))

        files = written()
        assert {f.split("/")[2] for f in files} == {"o_orderstatus=F", "o_orderstatus=O", "o_orderstatus=P"}, files
        assert all(re.match(r"out/orders/o_orderstatus=[FOP]/[0-9a-f]+\.parquet$", f) for f in files), files
        assert sorted(f["path"] for f in first["files"]) == files
        assert sum(f["bytes"] for f in first["files"]) == first["num_bytes"]
        # The same sink again: the same answer, the same files.
        again = orders.sink_parquet("out/orders", partition_by="o_orderstatus")
        assert again == first
        assert written() == files
        # A scan of what was written gives the same rows back.
        back = pw.scan_parquet("out/orders", hive_partitioning=True).collect()
        want = orders.collect()
        key = ["o_orderkey"]
        assert back.sort(key).select(want.columns).equals(want.sort(key).select(want.columns).cast(back.select(want.columns).schema))
        # Another plan into the same target is refused unless it overwrites.
        other = pw.scan_parquet("tpch/orders.parquet").head(10)
        with pytest.raises(Exception, match="(?i)exists"):
            other.sink_parquet("out/orders", partition_by="o_orderstatus")
        replaced = other.sink_parquet("out/orders", partition_by="o_orderstatus", mode="overwrite")
        assert replaced["num_rows"] == 10
        assert pw.scan_parquet("out/orders", hive_partitioning=True).collect().height == 10
        # One file, CSV and IPC.
        one = pw.scan_parquet("tpch/nation.parquet").sink_csv("out/nation.csv")
        assert one["files"] == [{"path": "out/nation.csv", "bytes": one["num_bytes"]}]
        assert pl.read_csv(root / "out" / "nation.csv").height == 25
        pw.scan_parquet("tpch/region.parquet").sink_ipc("out/region.ipc")
        assert pw.scan_ipc("out/region.ipc").collect().height == 5
        # No temporary files are left, and none is visible to a scan.
        assert not [p for p in root.rglob(".polarway-sink-*")]
    finally:
        worker.stop()


def test_a_read_only_root_refuses_sinks(tmp_path, tpch_files):
    worker, root = local_root(tmp_path, tpch_files)
    try:
        pw = polarway.connect(worker.location)
        with pytest.raises(flight.FlightUnauthorizedError, match="read-only"):
            pw.scan_parquet("tpch/nation.parquet").sink_parquet("out/n.parquet")
        assert not (root / "out").exists()
    finally:
        worker.stop()


def test_paths_stay_under_the_root_and_the_root_is_never_named(tmp_path, tpch_files):
    worker, root = local_root(tmp_path, tpch_files)
    outside = tmp_path / "secret.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(outside)
    os.symlink(outside, root / "tpch" / "link.parquet")
    try:
        pw = polarway.connect(worker.location, retry=polarway.RetryPolicy(attempts=1))
        for path in ["../secret.parquet", str(outside), "s3://bucket/x.parquet", "tpch/../../secret.parquet",
                     "tpch/link.parquet", "tpch/*.parquet"]:
            with pytest.raises(flight.FlightUnauthorizedError) as err:
                pw.scan_parquet(path).collect()
            assert str(root) not in str(err.value), err.value
        with pytest.raises(Exception, match="(?i)not found|no files"):
            pw.scan_parquet("tpch/missing.parquet").collect()
        # A file that is not Parquet: Polars' and DataFusion's messages name it under the root.
        (root / "tpch" / "broken.parquet").write_bytes(b"not parquet at all")
        with pytest.raises(Exception) as err:
            pw.scan_parquet("tpch/broken.parquet").collect()
        assert str(root) not in str(err.value), err.value
        log = json.dumps(worker.log)
        assert str(root) not in log
    finally:
        worker.stop()


def test_sql_over_a_broken_dataset_names_no_server_path(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "broken.parquet").write_bytes(b"not parquet at all")
    datasets = tmp_path / "datasets.json"
    datasets.write_text(json.dumps({"broken": {"path": "broken.parquet", "format": "parquet"}}))
    worker = Worker(POLARWAY_DATA_DIR=str(root), POLARWAY_DATASETS_FILE=str(datasets))
    try:
        with pytest.raises(adbc_driver_manager.Error) as err:
            sql(worker.location, "SELECT * FROM broken")
        assert str(root) not in str(err.value) and "broken" in str(err.value), err.value
    finally:
        worker.stop()


def test_a_join_of_plans_is_one_request_and_one_result(tmp_path, tpch_files):
    worker, _ = local_root(tmp_path, tpch_files)
    try:
        pw = polarway.connect(worker.location)
        nations = pw.dataset("nation").filter(pl.col("n_regionkey") == 1).select("n_nationkey", "n_name")
        customers = pw.dataset("customer").select("c_custkey", "c_nationkey")
        before = worker.persisted()
        got = (customers.join(nations, left_on="c_nationkey", right_on="n_nationkey")
               .group_by("n_name").agg(pl.len()).sort("n_name").collect())
        assert worker.persisted() == before + 1, "only the final result is stored"
        local = lambda n: pl.scan_parquet(tpch_files / f"{n}.parquet")  # noqa: E731
        want = (local("customer").select("c_custkey", "c_nationkey")
                .join(local("nation").filter(pl.col("n_regionkey") == 1).select("n_nationkey", "n_name"),
                      left_on="c_nationkey", right_on="n_nationkey")
                .group_by("n_name").agg(pl.len()).sort("n_name").collect())
        assert got.equals(want.cast(got.schema))
        # The same plan again finds its result; the explain shows what reached the scan.
        assert got.equals(customers.join(nations, left_on="c_nationkey", right_on="n_nationkey")
                          .group_by("n_name").agg(pl.len()).sort("n_name").collect())
        assert worker.persisted() == before + 1
        plan = pw.dataset("lineitem").filter(pl.col("l_quantity") > 45).select("l_orderkey").explain()
        assert "SELECTION" in plan.upper() or "FILTER" in plan.upper(), plan
        assert "l_orderkey" in plan
        both = polarway.concat([pw.dataset("region"), pw.dataset("region").head(2)]).collect()
        assert both.height == 7
    finally:
        worker.stop()


def test_a_changed_file_gives_a_new_result(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    pl.DataFrame({"x": [1, 2]}).write_parquet(root / "t.parquet")
    datasets = tmp_path / "datasets.json"
    datasets.write_text(json.dumps({"t": {"path": "t.parquet", "format": "parquet"}}))
    worker = Worker(POLARWAY_DATA_DIR=str(root), POLARWAY_DATASETS_FILE=str(datasets))
    try:
        pw = polarway.connect(worker.location)
        first = pw.scan_parquet("t.parquet").persist().handle
        assert pw.scan_parquet("t.parquet").persist().handle == first
        assert sql(worker.location, "SELECT count(*) AS n FROM t")["n"].to_list() == [2]
        pl.DataFrame({"x": [1, 2, 3]}).write_parquet(root / "t.parquet")
        changed = pw.scan_parquet("t.parquet").persist()
        assert changed.handle != first
        assert changed.collect()["x"].to_list() == [1, 2, 3]
        # The same SQL over the changed dataset is a new result too.
        assert sql(worker.location, "SELECT count(*) AS n FROM t")["n"].to_list() == [3]
    finally:
        worker.stop()


def test_scan_limits_refuse_before_reading(tmp_path):
    root = tmp_path / "data"
    (root / "many").mkdir(parents=True)
    for i in range(5):
        pl.DataFrame({"x": [i]}).write_parquet(root / "many" / f"{i}.parquet")
    worker = Worker(POLARWAY_DATA_DIR=str(root), POLARWAY_MAX_SCAN_FILES="4", POLARWAY_MAX_SCAN_BYTES="100000")
    try:
        pw = polarway.connect(worker.location, retry=polarway.RetryPolicy(attempts=1))
        with pytest.raises(Exception, match="POLARWAY_MAX_SCAN_FILES"):
            pw.scan_parquet("many").collect()
        assert pw.scan_parquet("many/[0-3].parquet").collect().height == 4
    finally:
        worker.stop()
    big = root / "big.parquet"
    pl.DataFrame({"x": list(range(200_000))}).write_parquet(big, compression="uncompressed")
    worker = Worker(POLARWAY_DATA_DIR=str(root), POLARWAY_MAX_SCAN_BYTES="100000")
    try:
        pw = polarway.connect(worker.location, retry=polarway.RetryPolicy(attempts=1))
        with pytest.raises(Exception, match="POLARWAY_MAX_SCAN_BYTES"):
            pw.scan_parquet("big.parquet").collect()
    finally:
        worker.stop()


def test_datasets_are_tenant_scoped_in_every_rpc(tmp_path, tpch_files):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({
        "signing_key": "a-long-shared-signing-key-for-tests",
        "tokens": [{"tenant": "acme", "sha256": hashlib.sha256(b"acme-token").hexdigest()},
                   {"tenant": "globex", "sha256": hashlib.sha256(b"globex-token").hexdigest()}],
    }))
    root = tmp_path / "data"
    (root / "tpch").mkdir(parents=True)
    os.link(tpch_files / "nation.parquet", root / "tpch" / "nation.parquet")
    datasets = tmp_path / "datasets.json"
    datasets.write_text(json.dumps({
        "nation": {"path": "tpch/nation.parquet", "format": "parquet", "tenants": ["acme"]},
        "acme_out": {"path": "acme_out", "format": "parquet", "tenants": ["acme"], "writable": True},
        "shared": {"path": "tpch/nation.parquet", "format": "parquet"},
    }))
    worker = Worker(POLARWAY_DATA_DIR=str(root), POLARWAY_DATASETS_FILE=str(datasets),
                    POLARWAY_AUTH_TOKENS_FILE=str(tokens))
    try:
        acme = polarway.connect(worker.location, token="acme-token")
        globex = polarway.connect(worker.location, token="globex-token", retry=polarway.RetryPolicy(attempts=1))
        assert acme.dataset("nation").collect().height == 25
        assert set(acme.datasets()) == {"nation", "acme_out", "shared"}
        assert set(globex.datasets()) == {"shared"}
        for attempt in (lambda: globex.dataset("nation").collect(),
                        lambda: globex.dataset("shared").join(globex.dataset("nation"), on="n_nationkey").collect(),
                        lambda: globex.dataset("nation").explain(),
                        lambda: globex.dataset("shared").sink_parquet(dataset="acme_out")):
            with pytest.raises(Exception, match="(?i)not found|no dataset"):
                attempt()
        with pytest.raises(adbc_driver_manager.Error, match="(?i)not found|nation"):
            sql(worker.location, "SELECT count(*) FROM nation", token="globex-token")
        assert sql(worker.location, "SELECT count(*) AS n FROM nation", token="acme-token")["n"].to_list() == [25]
        assert sql(worker.location, "SELECT count(*) AS n FROM shared", token="globex-token")["n"].to_list() == [25]
        # A writable dataset takes sinks from its tenant (the root itself stays read-only).
        written = acme.dataset("shared").sink_parquet(dataset="acme_out", mode="overwrite")
        assert written["num_rows"] == 25
        assert acme.dataset("acme_out").collect().height == 25
        with pytest.raises(flight.FlightUnauthorizedError, match="read-only"):
            acme.dataset("shared").sink_parquet(dataset="shared")
    finally:
        worker.stop()
