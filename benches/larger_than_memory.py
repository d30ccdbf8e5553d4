"""A group_by over a scanned dataset larger than the worker's memory.

The worker runs in a memory cgroup (v1 `memory.limit_in_bytes`, or v2 `memory.max`) capped at
`--cap-mib`; the dataset is TPC-H lineitem, split in files, at a scale whose decoded size is at
least three times the cap. The query is TPC-H Q1's shape (a filter, six aggregates over two keys)
through the Python client over a scan; its answer is compared with local Polars, which runs
uncapped. Prints the dataset's decoded size, the cap, the worker's peak (the cgroup's own
high-water mark, and the sampled RSS) and the time.

    python benches/larger_than_memory.py --cap-mib 1024 --scale 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "python"))

import polars as pl  # noqa: E402
import polarway  # noqa: E402
import tpch  # noqa: E402
from conftest_worker import Worker  # noqa: E402
from harness import PeakRss  # noqa: E402


class Cgroup:
    """A memory cgroup of its own, v1 or v2, capped at `limit` bytes."""

    def __init__(self, limit: int):
        v1 = Path("/sys/fs/cgroup/memory")
        if v1.is_dir():
            self.dir, self.limit_file, self.peak_file = v1 / f"polarway-bench-{os.getpid()}", "memory.limit_in_bytes", "memory.max_usage_in_bytes"
        else:
            self.dir, self.limit_file, self.peak_file = Path("/sys/fs/cgroup") / f"polarway-bench-{os.getpid()}", "memory.max", "memory.peak"
        self.dir.mkdir()
        (self.dir / self.limit_file).write_text(str(limit))
        if (self.dir / "memory.memsw.limit_in_bytes").exists():
            try:  # no swap to spill into either, where the kernel accounts it
                (self.dir / "memory.memsw.limit_in_bytes").write_text(str(limit))
            except OSError:
                pass

    def enter(self):
        """For `preexec_fn`: the child process joins the cgroup before it execs."""
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> int:
        return int((self.dir / self.peak_file).read_text())

    def remove(self):
        try:
            self.dir.rmdir()
        except OSError:
            pass


def query(frame):
    return (frame.filter(pl.col("l_shipdate") <= pl.date(1998, 9, 2))
            .group_by("l_returnflag", "l_linestatus")
            .agg(pl.col("l_quantity").sum().alias("sum_qty"),
                 tpch.revenue().sum().alias("sum_disc_price"),
                 pl.col("l_extendedprice").cast(pl.Float64).mean().alias("avg_price"),
                 pl.col("l_discount").cast(pl.Float64).mean().alias("avg_disc"),
                 pl.col("l_quantity").cast(pl.Float64).max().alias("max_qty"),
                 pl.len().alias("count_order"))
            .sort("l_returnflag", "l_linestatus"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cap-mib", type=int, default=1024)
    parser.add_argument("--scale", type=float, default=4.0)
    args = parser.parse_args()
    cache = Path(os.environ.get("POLARWAY_TPCH_DIR", Path.home() / ".cache" / "polarway-tpch"))
    data = cache / f"lineitem-sf{args.scale:g}"
    if not (data / "lineitem").is_dir():
        data.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(sys.executable).with_name("tpchgen-cli")), "parquet", "-s", str(args.scale),
                        "--tables=lineitem", "--parts=16", f"--output-dir={data}"], check=True, stdout=subprocess.DEVNULL)
    local = pl.scan_parquet(data / "lineitem")
    decoded = local.collect().estimated_size()
    cap = args.cap_mib << 20
    print(f"lineitem SF {args.scale:g}: {decoded / 2**30:.2f} GiB decoded, {decoded / cap:.1f}x the {args.cap_mib} MiB cap")
    if decoded < 3 * cap:
        print("the dataset is smaller than three times the cap: raise --scale")
    want = query(local).collect()

    cgroup = Cgroup(cap)
    worker = Worker(preexec=cgroup.enter, POLARWAY_DATA_DIR=str(data), POLARWAY_MAX_CONCURRENT_OPS="1")
    try:
        rss = PeakRss([worker.proc.pid])
        pw = polarway.connect(worker.location, action_timeout=3600, stream_timeout=3600)
        start = time.perf_counter()
        got = query(pw.scan_parquet("lineitem")).collect()
        elapsed = time.perf_counter() - start
        peak_rss = rss.stop()[worker.proc.pid]
        tpch.assert_same(got, want, "larger than memory")
        print(f"completed in {elapsed:.1f} s; the worker's peak: {cgroup.peak() / 2**20:.0f} MiB (cgroup), "
              f"{peak_rss / 1024:.0f} MiB RSS (sampled), under a {args.cap_mib} MiB cap")
    finally:
        worker.stop()
        cgroup.remove()


if __name__ == "__main__":
    main()
