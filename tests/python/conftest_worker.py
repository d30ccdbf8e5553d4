"""Fixtures: a real polarway-grpc process on 127.0.0.1 and a pyarrow Flight client."""

import json
import os
import subprocess
import threading
import time

import pyarrow.flight as flight
import pytest

BIN = os.environ.get("POLARWAY_BIN", "polarway-grpc")


class Worker:
    """A polarway-grpc process; ready once it logs the address it listens on."""

    def __init__(self, cpus=None, preexec=None, **env):
        """`env` adds to a minimal environment; `cpus` pins the process to those cores; `preexec`
        runs in the child before it starts (joining a cgroup)."""
        full_env = {"PATH": os.environ.get("PATH", ""), "POLARWAY_BIND_ADDRESS": "127.0.0.1:0",
                    "POLARWAY_METRICS_ADDRESS": "127.0.0.1:0", "POLARWAY_LOG_FORMAT": "json", **env}

        def pin():
            if cpus:
                os.sched_setaffinity(0, cpus)
            if preexec:
                preexec()
        self.proc = subprocess.Popen([BIN], env=full_env, stdout=subprocess.PIPE, text=True, preexec_fn=pin)
        self.address = None
        for line in self.proc.stdout:
            record = json.loads(line)
            if record["fields"].get("message") == "polarway-grpc listening":
                self.address = record["fields"]["address"]
                self.metrics_address = record["fields"]["metrics"]
                self.tls = bool(record["fields"].get("tls"))
                break
        if self.address is None:
            raise RuntimeError(f"worker exited with {self.proc.wait()} before listening")
        self.log = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.location = f"{'grpc+tls' if self.tls else 'grpc'}://{self.address}"

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(json.loads(line))

    def settled_log(self, quiet=0.1, at_most=3.0):
        """The log once no line has arrived for `quiet` seconds: a line the worker wrote before it
        answered may still be in the pipe when the answer is read."""
        deadline = time.monotonic() + at_most
        seen = -1
        while len(self.log) != seen and time.monotonic() < deadline:
            seen = len(self.log)
            time.sleep(quiet)
        return self.log

    def persisted(self):
        """How many results this worker computed or stored, from its own log."""
        return sum(1 for r in self.settled_log() if r["fields"].get("message") == "result persisted")

    def client(self, **options):
        return flight.FlightClient(self.location, **options)

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(timeout=30) == 0

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def worker():
    w = Worker()
    yield w
    w.stop()


@pytest.fixture
def client(worker):
    c = worker.client()
    yield c
    c.close()
