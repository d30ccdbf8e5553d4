"""What the end-to-end benchmarks share: timing, resident-set sampling, plain Flight calls."""

import json
import os
import statistics
import threading
import time

import pyarrow.flight as flight


def median(xs):
    return statistics.median(xs)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def rss_kib(pid):
    """The resident set of a process, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """User and system CPU a process has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """Samples processes' resident sets every 10 ms until stopped; `peak[pid]` is the highest."""

    def __init__(self, pids):
        self.peak = {pid: rss_kib(pid) for pid in pids}
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while self.running:
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], rss_kib(pid))
            time.sleep(0.01)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak


def put(client, table, name="bench"):
    """DoPut of `table` in 128k-row batches under the name `name`; the worker's answer."""
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(name), table.schema)
    writer.write_table(table, max_chunksize=1 << 17)
    writer.done_writing()
    meta = json.loads(reader.read().to_pybytes())
    writer.close()
    return meta


def drain(client, handle):
    n = 0
    for chunk in client.do_get(flight.Ticket(handle.encode())):
        n += chunk.data.num_rows
    return n


def act(client, op, body):
    [result] = client.do_action(flight.Action(op, json.dumps(body).encode()))
    return json.loads(result.body.to_pybytes())
