"""The in-memory path from two worker binaries, side by side: what a plan over uploaded data
costs when no data root is involved.

    benches/memory_path_side_by_side.py OLD_BIN NEW_BIN [REPS]

Both workers get the same 10M-row upload; rounds are interleaved so that the machine's drift
falls on both alike. Cases: the 10-step chain through the Polars client (one pipeline call), a
group_by action on the 10M rows, a join of two uploads through the client, and a small filter's
latency. Each repetition changes a literal so the worker computes instead of finding its stored
result. Prints each one's medians and NEW / OLD.
"""

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))

import conftest_worker  # noqa: E402
import polars as pl  # noqa: E402
import polarway  # noqa: E402
from harness import put, timed  # noqa: E402
from workload import ten_steps, trades  # noqa: E402


def main():
    bins, reps = sys.argv[1:3], int(sys.argv[3]) if len(sys.argv) > 3 else 5
    big = trades(10_000_000)
    dim = pl.DataFrame({"sym": big["sym"].unique().sort(), "weight": range(big["sym"].n_unique())})
    runs = []
    for binary in bins:
        conftest_worker.BIN = binary
        worker = conftest_worker.Worker()
        pw = polarway.connect(worker.location, action_timeout=600, stream_timeout=600)
        client = worker.client()
        uploaded = [put(client, frame.to_arrow(), name)["handle"] for frame, name in ((big, "big"), (dim, "dim"))]
        runs.append({"worker": worker, "pw": pw, "big": pw.frame(uploaded[0]), "dim": pw.frame(uploaded[1]), "t": {}})
    cases = {
        "10 steps, lazy client": lambda r, i: ten_steps(r["big"], 30 + i).collect(),
        "group_by 10M rows": lambda r, i: r["big"].group_by("sym", "day").agg(pl.col("qty").sum().alias(f"q{i}")).collect(),
        "join of two uploads": lambda r, i: r["big"].filter(pl.col("qty") > i).join(r["dim"], on="sym")
        .group_by("weight").agg(pl.len()).collect(),
        "small filter": lambda r, i: r["dim"].filter(pl.col("weight") > i % 3).collect(),
    }
    try:
        for i in range(reps):
            for name, case in cases.items():
                for r in runs:
                    seconds, _ = timed(lambda: case(r, i))
                    r["t"].setdefault(name, []).append(seconds)
        old, new = runs
        print("| case | old (ms) | new (ms) | new / old |\n| --- | --- | --- | --- |")
        for name in cases:
            o, n = statistics.median(old["t"][name]) * 1e3, statistics.median(new["t"][name]) * 1e3
            print(f"| {name} | {o:.1f} | {n:.1f} | {n / o:.2f} |")
    finally:
        for r in runs:
            r["worker"].stop()


if __name__ == "__main__":
    main()
