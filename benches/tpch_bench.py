"""TPC-H side by side, in one run, per query and in total (see benches/tpch.py for the queries).

- Polarway's Python client (scans of the Parquet files on its data root) against local Polars
  on the same files: the release this client has (2.1) and 1.43.2, the worker's engine.
- Polarway's Flight SQL over ADBC (the files as declared datasets) against DuckDB (in process)
  and roapi (a DataFusion server over the same files, over ADBC).
- Both against Spark Connect (SQL over `spark.read.parquet` views).

Every answer is compared with local Polars (Polars form) or DuckDB (SQL form). Polarway keys a
result by its request, so each repetition drops the result it made (client form) or differs by
a comment (SQL form): every timing computes. Medians of `--reps` runs; ratios are Polarway's
time over the peer's.

    python benches/tpch_bench.py --scale 1 --reps 3 --engine-twin <python with polars 1.43.2> [--no-spark]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "python"))

import adbc_driver_flightsql.dbapi as flight_sql  # noqa: E402
import duckdb  # noqa: E402
import polars as pl  # noqa: E402
import polarway  # noqa: E402
import tpch  # noqa: E402
from conftest_worker import Worker  # noqa: E402
from harness import PeakRss, median  # noqa: E402

TWIN_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import polars as pl, tpch
data, reps = sys.argv[2], int(sys.argv[3])
t = lambda n: pl.scan_parquet(f"{data}/{n}.parquet")
out = {}
for n in range(1, 23):
    times = []
    for _ in range(reps):
        start = time.perf_counter(); tpch.POLARS[n](t).collect(); times.append(time.perf_counter() - start)
    out[n] = sorted(times)[len(times) // 2]
print(json.dumps(out))
"""


def timed_median(fn, reps):
    times, result = [], None
    for i in range(reps):
        start = time.perf_counter()
        result = fn(i)
        times.append(time.perf_counter() - start)
    return median(times), result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--engine-twin", help="a Python with polars 1.43.2 (the worker's engine)")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--roapi", default=str(Path(sys.executable).with_name("roapi")))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    data = tpch.generate(args.scale, Path(os.environ.get("POLARWAY_TPCH_DIR", Path.home() / ".cache" / "polarway-tpch"))
                         / f"sf{args.scale:g}")
    datasets = tpch.datasets_file(data.parent / f"datasets-sf{args.scale:g}.json", prefix=f"sf{args.scale:g}/")
    worker = Worker(POLARWAY_DATA_DIR=str(data.parent), POLARWAY_DATASETS_FILE=str(datasets))
    rss = PeakRss([worker.proc.pid])
    pw = polarway.connect(worker.location, action_timeout=3600, stream_timeout=3600)
    local = lambda n: pl.scan_parquet(data / f"{n}.parquet")  # noqa: E731
    remote = lambda n: pw.scan_parquet(f"sf{args.scale:g}/{n}.parquet")  # noqa: E731
    duck = duckdb.connect()
    for t in tpch.TABLES:
        duck.execute(f"create view {t} as select * from read_parquet('{data}/{t}.parquet')")
    sql_conn = flight_sql.connect(worker.location, autocommit=True)

    def polarway_sql(q, i):
        with sql_conn.cursor() as cur:
            cur.execute(f"{q}\n-- repetition {i}")
            return pl.from_arrow(cur.fetch_arrow_table())

    made = []

    def client(n, i):
        frame = tpch.POLARS[n](remote).persist()
        made.append(frame.handle)
        return frame.collect()

    def forget():
        """Drops what the last timing made, outside the timing, so the next one computes."""
        while made:
            pw.action("drop_handle", {"handle": made.pop()})

    def timed_client(n):
        times, out = [], None
        for i in range(args.reps):
            start = time.perf_counter()
            out = client(n, i)
            times.append(time.perf_counter() - start)
            forget()
        return median(times), out

    rows = {}
    for n in range(1, 23):
        row = rows[n] = {}
        row["polars"], want = timed_median(lambda i: tpch.POLARS[n](local).collect(), args.reps)
        row["client"], got = timed_client(n)
        tpch.assert_same(got, want, f"Q{n} client")
        row["duckdb"], want_sql = timed_median(lambda i: pl.from_arrow(duck.sql(tpch.SQL[n]).to_arrow_table()), args.reps)
        row["sql"], got_sql = timed_median(lambda i: polarway_sql(tpch.SQL[n], i), args.reps)
        tpch.assert_same(got_sql, want_sql, f"Q{n} sql")
        print(f"Q{n:<2} client {row['client']:.3f}s polars {row['polars']:.3f}s | sql {row['sql']:.3f}s duckdb {row['duckdb']:.3f}s",
              flush=True)
    worker_peak = rss.stop()[worker.proc.pid]
    sql_conn.close()
    worker.stop()

    if args.engine_twin:
        out = subprocess.run([args.engine_twin, "-c", TWIN_SCRIPT, str(HERE), str(data), str(args.reps)],
                             check=True, capture_output=True, text=True).stdout
        for n, seconds in json.loads(out).items():
            rows[int(n)]["polars143"] = seconds

    if Path(args.roapi).exists():
        from peers.roapi_peer import Roapi
        peer = Roapi(args.roapi, {t: str(data / f"{t}.parquet") for t in tpch.TABLES})
        for n in range(1, 23):
            try:
                rows[n]["roapi"], got = timed_median(lambda i: pl.from_arrow(peer.query(f"{tpch.SQL[n]}\n-- {i}")), args.reps)
                want = pl.from_arrow(duck.sql(tpch.SQL[n]).to_arrow_table())
                tpch.assert_same(got, want, f"Q{n} roapi")
            except Exception as e:  # noqa: BLE001 - a peer that cannot run a query is reported, not fatal
                rows[n]["roapi"] = None
                print(f"Q{n} roapi: {str(e)[:200]}", flush=True)
        peer.stop()

    if not args.no_spark:
        from peers.spark_peer import SparkConnect
        spark = SparkConnect(cores=os.cpu_count() or 2)
        for t in tpch.TABLES:
            spark.session.read.parquet(str(data / f"{t}.parquet")).createOrReplaceTempView(t)
        for n in range(1, 23):
            try:
                rows[n]["spark"], got = timed_median(lambda i: pl.from_arrow(spark.session.sql(tpch.SQL[n]).toArrow()),
                                                     args.reps)
                want = pl.from_arrow(duck.sql(tpch.SQL[n]).to_arrow_table())
                tpch.assert_same(got, want, f"Q{n} spark")
            except Exception as e:  # noqa: BLE001
                rows[n]["spark"] = rows[n].get("spark")
                print(f"Q{n} spark: {str(e)[:200]}", flush=True)
        spark.stop()

    columns = ["client", "polars", "polars143", "sql", "duckdb", "roapi", "spark"]
    print(f"\nTPC-H SF {args.scale:g}, medians of {args.reps} (seconds); worker peak RSS {worker_peak / 1024:.0f} MiB")
    print("| query | " + " | ".join(columns) + " | client/polars143 | sql/duckdb | spark/client | spark/sql |")
    print("|" + " --- |" * (len(columns) + 5))
    totals = {c: 0.0 for c in columns}

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "-"

    for n, row in rows.items():
        for c in columns:
            if row.get(c) is not None:
                totals[c] += row[c]
        cells = " | ".join(f"{row[c]:.3f}" if row.get(c) is not None else "-" for c in columns)
        print(f"| Q{n} | {cells} | {ratio(row['client'], row.get('polars143'))} | {ratio(row['sql'], row['duckdb'])} | "
              f"{ratio(row.get('spark'), row['client'])} | {ratio(row.get('spark'), row['sql'])} |")
    cells = " | ".join(f"{totals[c]:.3f}" for c in columns)
    print(f"| total | {cells} | {ratio(totals['client'], totals['polars143'])} | {ratio(totals['sql'], totals['duckdb'])} | "
          f"{ratio(totals['spark'], totals['client'])} | {ratio(totals['spark'], totals['sql'])} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"scale": args.scale, "reps": args.reps, "rows": rows, "totals": totals,
                                               "worker_peak_kib": worker_peak}, indent=1))


if __name__ == "__main__":
    main()
