"""End-to-end benchmarks, side by side in one run: Polarway against the loopback link, local
Polars, a plain pyarrow Flight server (benches/peers/pyarrow_peer.py), and the servers its users
would run instead (benches/versus.py): roapi, a DataFusion Flight SQL server, and Spark Connect,
whose answers are compared with local Polars.

    scripts/bench                  # the full run on the release build (1 GiB, 10M rows, 5 reps)
    scripts/bench --profile test   # the same on the test build
    scripts/bench --quick          # a small smoke run of every case (CI): checks the harness, not speed

Prints a table of medians and ratios, and writes it as Markdown with --markdown FILE.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import polarway
import pyarrow.flight as flight

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))
import versus  # noqa: E402
from conftest_worker import Worker  # noqa: E402
from fleet import Nginx  # noqa: E402
from harness import act, drain, median, ms, put, rss_kib, timed  # noqa: E402
from workload import ten_steps, trades  # noqa: E402

MiB = 1 << 20


def table_of(nbytes):
    """A table of about `nbytes` (4 columns of 8 bytes)."""
    rows = max(1, nbytes // 32)
    return pl.DataFrame({
        "id": pl.int_range(0, rows, eager=True),
        "qty": (pl.int_range(0, rows, eager=True) * 7) % 1000,
        "price": pl.int_range(0, rows, eager=True).cast(pl.Float64) * 0.25,
        "k": pl.int_range(0, rows, eager=True) % 64,
    }).to_arrow()






# -- the physical limit ------------------------------------------------------------------------

RECEIVER = r"""
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    want = int.from_bytes(c.recv(8), "little")
    buf = bytearray(4 << 20); got = 0
    while got < want:
        n = c.recv_into(buf)
        if not n: break
        got += n
    c.sendall(b"k"); c.close()
"""


def loopback_seconds(nbytes, receiver_port):
    chunk = memoryview(bytearray(os.urandom(1 << 20) * 4))
    with socket.create_connection(("127.0.0.1", receiver_port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        start = time.perf_counter()
        s.sendall(nbytes.to_bytes(8, "little"))
        sent = 0
        while sent < nbytes:
            part = chunk[: min(len(chunk), nbytes - sent)]
            s.sendall(part)
            sent += len(part)
        assert s.recv(1) == b"k"
        return time.perf_counter() - start


# -- helpers ----------------------------------------------------------------------------------


class Peer:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "benches" / "peers" / "pyarrow_peer.py"), "127.0.0.1", "0"],
                                     stdout=subprocess.PIPE, text=True)
        port = int(self.proc.stdout.readline().split()[1])
        self.location = f"grpc://127.0.0.1:{port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def closed_loop(location, seconds, clients, input_handle):
    """Grouped aggregations from `clients` threads for `seconds`; returns completed operations.
    Each costs the worker milliseconds of CPU and answers a few kB, so the load is bound by the
    workers, not by the client or nginx. Every request differs (the filter's bound), as a repeated
    one would be answered from the store."""
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def run(i):
        client = flight.FlightClient(location)
        n = 0
        while time.perf_counter() < stop:
            steps = [{"op": "filter", "predicate": f"price > {(n * clients + i) * 1e-6:.6f}"},
                     {"op": "group_by", "by": ["sym", "day"], "aggs": ["sum(qty) AS q", "avg(price) AS p"]}]
            act(client, "pipeline", {"input": input_handle, "steps": steps})
            n += 1
        done[i] = n

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)





# -- the cases ----------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke test")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--markdown", help="also write the table here")
    parser.add_argument("--no-spark", action="store_true", help="leave out the Spark Connect peer")
    parser.add_argument("--engine-twin", help="a Python whose Polars matches the worker's engine (1.43.2), for case 4b")
    args = parser.parse_args()
    quick = args.quick
    reps = 1 if quick else args.reps
    big = 16 * MiB if quick else 1024 * MiB
    group_rows = 200_000 if quick else 10_000_000
    small_reps = 20 if quick else 300
    load_seconds = 2 if quick else 15

    rows = []  # (case, polarway, reference, ratio, target, ok)

    def record(case, ours, ref, ratio, target, ok):
        rows.append((case, ours, ref, ratio, target, ok))
        print(f"{case}: {ours} vs {ref} -> {ratio} (target {target}) {'' if ok is None else 'OK' if ok else 'MISSED'}", flush=True)

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"polarway-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    receiver_port = int(receiver.stdout.readline())
    memory = Worker(POLARWAY_HANDLE_STORE="memory", POLARWAY_RESULT_TTL_SECS="3600")
    external = Worker(POLARWAY_HANDLE_STORE="external", POLARWAY_STATE_DIR=str(tmp / "state"), POLARWAY_RESULT_TTL_SECS="3600")
    peer = Peer()
    try:
        mem_c, ext_c, peer_c = memory.client(), external.client(), flight.FlightClient(peer.location)
        table = table_of(big)
        nbytes = table.nbytes

        # 1-2. DoGet and DoPut of `big` bytes against a raw loopback copy of the same bytes.
        loop = [loopback_seconds(nbytes, receiver_port) for _ in range(reps)]
        puts, ext_handle = [], None
        for i in range(reps):
            t, meta = timed(lambda: put(mem_c, table, f"put{i}"))
            puts.append(t)
            act(mem_c, "drop_handle", {"handle": meta["handle"]})
        ext_handle = put(ext_c, table)["handle"]
        mem_handle = put(mem_c, table)["handle"]
        gets = []
        base = rss_kib(external.proc.pid)
        peak = [base]
        sampling = [True]

        def sample():
            while sampling[0]:
                peak[0] = max(peak[0], rss_kib(external.proc.pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        for _ in range(reps):
            t, n = timed(lambda: drain(ext_c, ext_handle))
            assert n == table.num_rows
            gets.append(t)
        sampling[0] = False
        sampler.join()
        def gbps(s):
            return f"{nbytes / s / 1e9:.2f} GB/s"
        record(f"DoGet {nbytes // MiB} MiB (external) / loopback copy", gbps(median(gets)), gbps(median(loop)),
               f"{median(loop) / median(gets):.2f}", ">= 0.8", median(loop) / median(gets) >= 0.8)
        record(f"DoPut {nbytes // MiB} MiB (memory) / loopback copy", gbps(median(puts)), gbps(median(loop)),
               f"{median(loop) / median(puts):.2f}", ">= 0.6", median(loop) / median(puts) >= 0.6)
        growth = (peak[0] - base) / 1024
        record(f"worker RSS growth streaming {nbytes // MiB} MiB", f"{growth:.0f} MiB", "-", "-", "<= 300 MiB", growth <= 300)

        # 7. DoGet throughput: Polarway (memory store) vs the pyarrow peer serving the same table.
        writer, reader = peer_c.do_put(flight.FlightDescriptor.for_path("t"), table.schema)
        writer.write_table(table, max_chunksize=1 << 17)
        writer.done_writing()
        peer_handle = json.loads(reader.read().to_pybytes())["handle"]
        writer.close()
        # Rounds interleaved after a warm-up, the first to go alternating, so that the machine's
        # drift falls on both alike.
        ours, theirs = [], []
        for i in range(reps + 1):
            pair = [(ours, mem_c, mem_handle), (theirs, peer_c, peer_handle)]
            for times, client, handle in pair[::-1] if i % 2 else pair:
                t = timed(lambda: drain(client, handle))[0]
                if i:
                    times.append(t)
        record("DoGet throughput: Polarway / pyarrow peer (C++ Flight)", gbps(median(ours)), gbps(median(theirs)),
               f"{median(theirs) / median(ours):.2f}", ">= 1.0", median(theirs) / median(ours) >= 1.0)
        act(mem_c, "drop_handle", {"handle": mem_handle})
        table = None  # frees it before the measurements that follow

        # 3. group_by on many rows (memory store) vs the same query in local Polars.
        frame = trades(group_rows)
        handle = put(mem_c, frame.to_arrow())["handle"]
        remote, local = [], []
        for i in range(reps + 1):
            aggs = [f"sum(qty) AS q{i}", "avg(price) AS p", "count(qty) AS n"]
            t, _ = timed(lambda: act(mem_c, "group_by", {"input": handle, "by": ["sym", "day"], "aggs": aggs}))
            tl, _ = timed(lambda: frame.group_by("sym", "day").agg(pl.col("qty").sum().alias(f"q{i}"),
                                                                  pl.col("price").mean().alias("p"),
                                                                  pl.col("qty").count().alias("n")))
            if i:  # the first of each is a warm-up
                remote.append(t)
                local.append(tl)
        record(f"group_by {group_rows:,} rows (memory) / local Polars", ms(median(remote)), ms(median(local)),
               f"{median(remote) / median(local):.2f}", "<= 1.3", median(remote) / median(local) <= 1.3)

        # 4. A 10-step pipeline vs the same lazy query locally.
        remote, local = [], []
        for i in range(reps + 1):
            steps = [
                {"op": "filter", "predicate": f"qty > {i}"},
                {"op": "with_columns", "columns": {"notional": "qty * price"}},
                {"op": "filter", "predicate": "notional > 10"},
                {"op": "with_columns", "columns": {"bucket": "qty % 10"}},
                {"op": "select", "columns": ["sym", "day", "qty", "price", "notional", "bucket"]},
                {"op": "filter", "predicate": "sym <> 'ORCL'"},
                {"op": "group_by", "by": ["sym", "bucket"], "aggs": ["sum(notional) AS total", "max(price) AS top"]},
                {"op": "with_columns", "columns": {"ratio": "total / top"}},
                {"op": "sort", "by": ["total"], "descending": [True]},
                {"op": "head", "n": 20},
            ]
            t, _ = timed(lambda: act(mem_c, "pipeline", {"input": handle, "steps": steps}))
            lazy = (frame.lazy().filter(pl.col("qty") > i).with_columns(notional=pl.col("qty") * pl.col("price"))
                    .filter(pl.col("notional") > 10).with_columns(bucket=pl.col("qty") % 10)
                    .select("sym", "day", "qty", "price", "notional", "bucket").filter(pl.col("sym") != "ORCL")
                    .group_by("sym", "bucket").agg(total=pl.col("notional").sum(), top=pl.col("price").max())
                    .with_columns(ratio=pl.col("total") / pl.col("top")).sort("total", descending=True).head(20))
            tl, _ = timed(lambda: lazy.collect())
            if i:
                remote.append(t)
                local.append(tl)
        record("10-step pipeline / local lazy query", ms(median(remote)), ms(median(local)),
               f"{median(remote) / median(local):.2f}", "<= 1.2", median(remote) / median(local) <= 1.2)

        # 4b. The same 10 steps written as Polars through the lazy client (one pipeline call),
        # as 10 sequential actions (one call and one stored result each), and in local Polars.
        pw = polarway.connect(memory.location)
        source = pw.frame(handle)
        chained, sequential, local = [], [], []
        for i in range(reps + 1):
            t, got = timed(lambda: ten_steps(source, 10 + i).collect())
            tl, want = timed(lambda: ten_steps(frame.lazy(), 10 + i).collect())
            assert got.equals(want), "the lazy client and local Polars agree"
            plan = ten_steps(source, 20 + i)

            def one_by_one():
                made = [handle]
                for step in plan.steps:
                    body = {k: v for k, v in step.items() if k != "op"}
                    made.append(act(mem_c, step["op"], {"input": made[-1], **body})["handle"])
                return pw.fetch(made[-1]), made[1:]

            ts, (_, made) = timed(one_by_one)
            # The intermediates of 10M rows each would otherwise stay in memory for the whole run.
            for h in made:
                act(mem_c, "drop_handle", {"handle": h})
            if i:
                chained.append(t)
                sequential.append(ts)
                local.append(tl)
        record("10 steps, lazy client / local Polars", ms(median(chained)), ms(median(local)),
               f"{median(chained) / median(local):.2f}", "<= 1.2", median(chained) / median(local) <= 1.2)
        record("10 steps, lazy client / 10 sequential actions", ms(median(chained)), ms(median(sequential)),
               f"{median(chained) / median(sequential):.2f}", "< 1", median(chained) < median(sequential))
        if args.engine_twin:
            # The same query in local Polars of the worker's engine generation (see workload.py):
            # what the service adds, apart from the engine's own version.
            out = subprocess.run([args.engine_twin, str(ROOT / "benches" / "workload.py"), "--rows", str(group_rows),
                                  "--reps", str(reps)], check=True, capture_output=True, text=True)
            twin = json.loads(out.stdout)
            record(f"10 steps, lazy client / local Polars {twin['polars']} (the worker's engine)", ms(median(chained)),
                   ms(twin["median_s"]), f"{median(chained) / twin['median_s']:.2f}", "<= 1.2",
                   median(chained) / twin["median_s"] <= 1.2)

        # 5. Small actions: filter on 10k rows, p50 and p99, memory vs external.
        small = trades(10_000)
        latencies = {}
        for name, c in (("memory", mem_c), ("external", ext_c)):
            h = put(c, small.to_arrow(), "small")["handle"]
            lat = []
            for i in range(small_reps):
                t, _ = timed(lambda: act(c, "filter", {"input": h, "predicate": f"qty > {i % 997} AND day <> {i % 365}"}))
                lat.append(t)
            lat.sort()
            latencies[name] = (lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))])
        (m50, m99), (e50, e99) = latencies["memory"], latencies["external"]
        record("small action p50 / p99, memory", f"{ms(m50)} / {ms(m99)}", f"external {ms(e50)} / {ms(e99)}",
               "-", "p50 <= 2 ms", m50 <= 0.002)

        # 8. Small action latency vs the peer doing the same filter.
        h_peer_w, h_peer_r = peer_c.do_put(flight.FlightDescriptor.for_path("small"), small.to_arrow().schema)
        h_peer_w.write_table(small.to_arrow())
        h_peer_w.done_writing()
        h_peer = json.loads(h_peer_r.read().to_pybytes())["handle"]
        h_peer_w.close()
        h_mem = put(mem_c, small.to_arrow(), "small2")["handle"]
        ours, theirs, our_floor, their_floor = [], [], [], []
        for i in range(small_reps):
            ours.append(timed(lambda: act(mem_c, "filter", {"input": h_mem, "predicate": f"qty > {(i * 31) % 997}"}))[0])
            theirs.append(timed(lambda: act(peer_c, "filter", {"input": h_peer, "column": "qty", "gt": (i * 31) % 997}))[0])
            # The round trip's floor: a call that does no work (ListActions) on each server.
            our_floor.append(timed(lambda: list(mem_c.list_actions()))[0])
            their_floor.append(timed(lambda: list(peer_c.list_actions()))[0])
        record("small action latency / pyarrow peer", ms(median(ours)), ms(median(theirs)),
               f"{median(ours) / median(theirs):.2f}", "<= 0.5", median(ours) / median(theirs) <= 0.5)
        record("(round trip floor: ListActions)", ms(median(our_floor)), ms(median(their_floor)),
               f"{median(our_floor) / median(their_floor):.2f}", "-", None)

        # 6. Cache hit vs cold read of the same input (external store): a fresh worker reads
        # each input once from the store, then again from its cache.
        inputs = [put(ext_c, trades(2_000_000 if not quick else 100_000).to_arrow(), f"in{i}")["handle"] for i in range(reps)]
        fresh = Worker(POLARWAY_HANDLE_STORE="external", POLARWAY_STATE_DIR=str(tmp / "state"))
        try:
            fc = fresh.client()
            cold, warm = [], []
            for h in inputs:
                cold.append(timed(lambda: act(fc, "shape", {"input": h}) and act(fc, "head", {"input": h, "n": 5}))[0])
                warm.append(timed(lambda: act(fc, "head", {"input": h, "n": 6}))[0])
        finally:
            fresh.stop()
        record("cache hit / cold read (external)", ms(median(warm)), ms(median(cold)),
               f"{median(warm) / median(cold):.2f}", "<= 0.3", median(warm) / median(cold) <= 0.3)

        # 10-11. Against roapi and Spark Connect, each beside a fresh worker: every case on both,
        # answers compared, both servers' peak RSS. Spark (a JVM start, parquet loads): full runs only.
        versus.run(record, tmp, lambda: Worker(POLARWAY_HANDLE_STORE="memory", POLARWAY_RESULT_TTL_SECS="3600"),
                   spark=not quick and not args.no_spark, rows=group_rows, big=table_of(big), small=trades(10_000),
                   reps=reps, small_reps=small_reps)

        # 9. Operations per second: 2 workers behind nginx, each pinned to a core of its own (one
        # Polars thread), against 1 such worker. The seed has no effect on the answer.
        state = str(tmp / "fleet")
        cores = sorted(os.sched_getaffinity(0))
        load = trades(100_000 if quick else 2_000_000).to_arrow()
        results = {}
        for n in (1, 2):
            fleet = [Worker(cpus={cores[j % len(cores)]}, POLARWAY_HANDLE_STORE="external", POLARWAY_STATE_DIR=state,
                            POLARS_MAX_THREADS="1") for j in range(n)]
            nginx = Nginx([w.address for w in fleet])
            try:
                c = flight.FlightClient(nginx.location)
                h = put(c, load, f"load{n}")["handle"]
                closed_loop(nginx.location, 1, 8, h)  # warm-up: every worker reads the input once
                results[n] = closed_loop(nginx.location, load_seconds, 8, h) / load_seconds
            finally:
                nginx.stop()
                for w in fleet:
                    w.stop()
        record(f"ops/s, 2 pinned workers behind nginx / 1 (group_by over {load.num_rows:,} rows)", f"{results[2]:.0f} ops/s",
               f"{results[1]:.0f} ops/s", f"{results[2] / results[1]:.2f}", ">= 1.7", results[2] / results[1] >= 1.7)
    finally:
        for w in (memory, external):
            if w.proc.poll() is None:
                w.stop()
        peer.stop()
        receiver.kill()
        subprocess.run(["rm", "-rf", str(tmp)])

    header = "| case | Polarway | reference | ratio | target | met |\n| --- | --- | --- | --- | --- | --- |\n"
    lines = "".join(f"| {c} | {o} | {r} | {x} | {t} | {'-' if ok is None else 'yes' if ok else 'no'} |\n" for c, o, r, x, t, ok in rows)
    print()
    print(header + lines)
    if args.markdown:
        Path(args.markdown).write_text(header + lines)


if __name__ == "__main__":
    main()
