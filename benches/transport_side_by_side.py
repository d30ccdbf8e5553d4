"""The transport's figures from two worker binaries, side by side: DoGet and DoPut of one 1 GiB
table, and a small action's latency.

    benches/transport_side_by_side.py OLD_BIN NEW_BIN [REPS] [VARIABLE=VALUE ...]

Both workers serve from memory to the same pyarrow client; rounds are interleaved so that the
machine's drift falls on both alike. Prints each one's medians and NEW / OLD. Settings after REPS
go to both workers (one that does not know a variable ignores it), e.g.
`POLARWAY_MAX_FRAME_BYTES=65536`.
"""

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))

import conftest_worker  # noqa: E402
import e2e  # noqa: E402
from harness import act, drain, put, timed  # noqa: E402


def main():
    bins, reps = sys.argv[1:3], int(sys.argv[3]) if len(sys.argv) > 3 else 5
    settings = dict(arg.split("=", 1) for arg in sys.argv[4:])
    table = e2e.table_of(1024 << 20)
    small = e2e.trades(10_000).to_arrow()
    workers = []
    for binary in bins:
        conftest_worker.BIN = binary
        workers.append(conftest_worker.Worker(POLARWAY_HANDLE_STORE="memory", POLARWAY_RESULT_TTL_SECS="3600", **settings))
    try:
        servers = []
        for binary, worker in zip(bins, workers):
            client = worker.client()
            servers.append((binary, client, put(client, table, "big")["handle"], put(client, small, "small")["handle"]))
        doget = {b: [] for b in bins}
        doput = {b: [] for b in bins}
        action = {b: [] for b in bins}
        for rep in range(reps):
            for binary, client, big, little in servers:
                doget[binary].append(timed(lambda: drain(client, big))[0])
                took, meta = timed(lambda: put(client, table, f"again{rep}"))
                doput[binary].append(took)
                act(client, "drop_handle", {"handle": meta["handle"]})  # memory stays flat across rounds
                for i in range(100):
                    body = {"input": little, "predicate": f"qty > {(rep * 100 + i) % 997} AND day <> {i % 365}"}
                    action[binary].append(timed(lambda: act(client, "filter", body))[0])
        gb = table.nbytes / 1e9
        old, new = bins
        for name, times, unit in (("DoGet 1 GiB", doget, "GB/s"), ("DoPut 1 GiB", doput, "GB/s"),
                                  ("small action p50", action, "ms")):
            med = {b: statistics.median(times[b]) for b in bins}
            if unit == "GB/s":
                shown = {b: f"{gb / med[b]:.2f} GB/s" for b in bins}
                ratio = med[old] / med[new]
            else:
                shown = {b: f"{med[b] * 1000:.2f} ms" for b in bins}
                ratio = med[new] / med[old]
            print(f"{name}: old {shown[old]}, new {shown[new]}, new/old {ratio:.2f}"
                  f"{' (throughput)' if unit == 'GB/s' else ' (latency)'}")
    finally:
        for w in workers:
            w.stop()


if __name__ == "__main__":
    main()
