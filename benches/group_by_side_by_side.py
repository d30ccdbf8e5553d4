"""The group_by of the roapi contest on two worker binaries, side by side, through the Polars
client and in SQL.

    benches/group_by_side_by_side.py OLD_BIN NEW_BIN [REPS]

Both get the same 10M rows (1,000 int keys, a float, a short string) by DoPut as the dataset
`kv`, then run the same group_by through the Polars client (sum, mean and count per key, then
the fetch) and the same in SQL over ADBC, rounds interleaved so that the machine's drift falls
on both alike. Prints each one's median time and server CPU per call (from /proc), and new / old;
every answer is checked against local Polars after the clock stops.
"""

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benches"))

import adbc_driver_flightsql.dbapi as flight_sql  # noqa: E402
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
            frame = client.frame(put(worker.client(), table, "kv")["handle"])
            sql = flight_sql.connect(worker.location, autocommit=True)
            servers.append((binary, worker, client, frame, sql))

        def by_sql(conn, n):
            with conn.cursor() as cur:
                cur.execute(f"SELECT k, sum(v) AS total, avg(v) AS mean, count(v) AS n{n} FROM kv GROUP BY k")
                return cur.fetch_arrow_table()

        cases = {"client": lambda s, n: group_by(s[3], n).to_arrow(), "sql": lambda s, n: by_sql(s[4], n)}
        times = {(c, b): [] for c in cases for b, *_ in servers}
        cpu = {(c, b): [] for c in cases for b, *_ in servers}
        for i in range(reps + 1):  # the first round is a warm-up
            for case, run in cases.items():
                for j, server in enumerate(servers):
                    binary, worker = server[0], server[1]
                    # A new alias per call and binary: no result is answered from the store.
                    n = i * len(servers) + j
                    before = cpu_seconds(worker.proc.pid)
                    t, got = timed(lambda: run(server, n))
                    used = cpu_seconds(worker.proc.pid) - before
                    agree(got, group_by(local.lazy(), n).collect(), f"{binary}'s {case} group_by", ["k"])
                    if i:
                        times[case, binary].append(t)
                        cpu[case, binary].append(used)
        for case in cases:
            for b in bins:
                print(case, b, " ".join(f"{t * 1e3:.1f}" for t in times[case, b]))
            old, new = (statistics.median(times[case, b]) for b in bins)
            for b in bins:
                print(f"{case} {b}: {statistics.median(times[case, b]) * 1e3:.1f} ms, server CPU "
                      f"{statistics.median(cpu[case, b]) * 1e3:.0f} ms per call")
            print(f"{case} new / old time: {new / old:.2f}; CPU: "
                  f"{statistics.median(cpu[case, bins[1]]) / statistics.median(cpu[case, bins[0]]):.2f}")
    finally:
        for _, worker, client, _, sql in servers:
            sql.close()
            client.close()
            worker.stop()


if __name__ == "__main__":
    main()
