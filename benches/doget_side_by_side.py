"""DoGet of one 1 GiB table from two worker binaries and the pyarrow peer, side by side.

    benches/doget_side_by_side.py OLD_BIN NEW_BIN [REPS]

Each serves the same table from memory to the same pyarrow client; rounds are interleaved so
that the machine's drift falls on all three alike. Prints each one's median throughput and its
server CPU per GiB (from /proc), the figure that moves least between runs on a shared machine.
"""

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))

import conftest_worker  # noqa: E402
import e2e  # noqa: E402
import pyarrow.flight as flight  # noqa: E402
from harness import cpu_seconds, drain, put, timed  # noqa: E402


def main():
    bins, reps = sys.argv[1:3], int(sys.argv[3]) if len(sys.argv) > 3 else 7
    table = e2e.table_of(1024 << 20)
    workers = []
    for binary in bins:
        conftest_worker.BIN = binary
        workers.append(conftest_worker.Worker(POLARWAY_HANDLE_STORE="memory", POLARWAY_RESULT_TTL_SECS="3600"))
    peer = e2e.Peer()
    try:
        servers = [(b, w.client(), w.proc.pid) for b, w in zip(bins, workers)]
        servers = [(b, c, pid, put(c, table)["handle"]) for b, c, pid in servers]
        pc = flight.FlightClient(peer.location)
        writer, reader = pc.do_put(flight.FlightDescriptor.for_path("t"), table.schema)
        writer.write_table(table, max_chunksize=1 << 17)
        writer.done_writing()
        servers.append(("pyarrow peer", pc, peer.proc.pid, json.loads(reader.read().to_pybytes())["handle"]))
        writer.close()
        times = {name: [] for name, *_ in servers}
        cpu = {name: [] for name, *_ in servers}
        for _ in range(reps):
            for name, client, pid, handle in servers:
                before = cpu_seconds(pid)
                times[name].append(timed(lambda: drain(client, handle))[0])
                cpu[name].append(cpu_seconds(pid) - before)
        gib = table.nbytes / (1 << 30)
        peer_time = statistics.median(times["pyarrow peer"])
        for name in times:
            t = statistics.median(times[name])
            print(f"{name}: {table.nbytes / t / 1e9:.2f} GB/s, / peer {peer_time / t:.2f}, "
                  f"server CPU {statistics.median(cpu[name]) / gib:.2f} s per GiB")
    finally:
        for w in workers:
            w.stop()
        peer.stop()


if __name__ == "__main__":
    main()
