"""The group_by of the roapi contest on two worker binaries, side by side.

    benches/group_by_side_by_side.py OLD_BIN NEW_BIN [REPS]

Both get the same 10M rows (1,000 int keys, a float, a short string) by DoPut, then run the
same group_by through the Polars client (sum, mean and count per key, then the fetch), rounds
interleaved so that the machine's drift falls on both alike. Prints each one's median time and
server CPU per call (from /proc), and new / old; every answer is checked against local Polars
after the clock stops.
"""

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))

import conftest_worker  # noqa: E402
import polarway  # noqa: E402
from harness import cpu_seconds, put, timed  # noqa: E402
from versus import agree, group_by, kvs  # noqa: E402


def main():
    bins, reps = sys.argv[1:3], int(sys.argv[3]) if len(sys.argv) > 3 else 9
    local = kvs(10_000_000)
    table = local.to_arrow()
    servers = []
    try:
        for binary in bins:
            conftest_worker.BIN = binary
            worker = conftest_worker.Worker(POLARWAY_HANDLE_STORE="memory", POLARWAY_RESULT_TTL_SECS="3600")
            client = polarway.connect(worker.location)
            frame = client.frame(put(worker.client(), table)["handle"])
            servers.append((binary, worker, client, frame))
        times = {b: [] for b, *_ in servers}
        cpu = {b: [] for b, *_ in servers}
        for i in range(reps + 1):  # the first round is a warm-up
            for j, (binary, worker, _, frame) in enumerate(servers):
                # A new alias per call and binary: no result is answered from the store.
                n = i * len(servers) + j
                before = cpu_seconds(worker.proc.pid)
                t, got = timed(lambda: group_by(frame, n).to_arrow())
                used = cpu_seconds(worker.proc.pid) - before
                agree(got, group_by(local.lazy(), n).collect(), f"{binary}'s group_by", ["k"])
                if i:
                    times[binary].append(t)
                    cpu[binary].append(used)
        old, new = (statistics.median(times[b]) for b in bins)
        for b in bins:
            print(f"{b}: {statistics.median(times[b]) * 1e3:.1f} ms, server CPU "
                  f"{statistics.median(cpu[b]) * 1e3:.0f} ms per call")
        print(f"new / old time: {new / old:.2f}; CPU: "
              f"{statistics.median(cpu[bins[1]]) / statistics.median(cpu[bins[0]]):.2f}")
    finally:
        for _, worker, client, _ in servers:
            client.close()
            worker.stop()


if __name__ == "__main__":
    main()
