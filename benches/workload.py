"""The trades table and the 10-step query the benchmarks run, importing nothing but Polars, so
that any Polars release can run them. Run as a script, it times the query locally:

    python benches/workload.py --rows 10000000 --reps 5   # prints {"median_s": ...}

`benches/e2e.py` runs it under Polars 1.43.2 too: the Python release nearest to the Rust crates
the worker is built on (crates.io's newest, 0.55.2), so the same engine as the worker's.
"""

import argparse
import json
import statistics
import time

import polars as pl


def trades(rows):
    return pl.DataFrame({
        "sym": pl.Series(["AAPL", "MSFT", "GOOG", "AMZN", "META", "NVDA", "TSLA", "ORCL"]).sample(rows, with_replacement=True, seed=1),
        "qty": (pl.int_range(0, rows, eager=True) * 7) % 1000,
        "price": pl.int_range(0, rows, eager=True).cast(pl.Float64) % 500 * 0.25,
        "day": pl.int_range(0, rows, eager=True) % 365,
    })


def ten_steps(f, i):
    """Ten steps over trades, on a LazyFrame or Polarway's RemoteFrame alike; `i` varies the
    first predicate, so that no result is answered from an earlier identical request."""
    return (f.filter(pl.col("qty") > i).with_columns(notional=pl.col("qty") * pl.col("price"))
            .filter(pl.col("notional") > 10).with_columns(bucket=pl.col("qty") % 10)
            .select("sym", "day", "qty", "price", "notional", "bucket").filter(pl.col("sym") != "ORCL")
            .group_by("sym", "bucket").agg(total=pl.col("notional").sum(), top=pl.col("price").max())
            .with_columns(ratio=pl.col("total") / pl.col("top")).sort("total", descending=True).head(20))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    frame = trades(args.rows)
    times = []
    for i in range(args.reps + 1):  # the first is a warm-up
        start = time.perf_counter()
        ten_steps(frame.lazy(), 10 + i).collect()
        times.append(time.perf_counter() - start)
    print(json.dumps({"polars": pl.__version__, "median_s": statistics.median(times[1:])}))


if __name__ == "__main__":
    main()
