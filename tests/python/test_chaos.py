"""Chaos: concurrent creations through nginx with the client's retries while workers are killed."""

import os
import pathlib
import random
import subprocess
import threading
import time

import polars as pl
import polarway
from conftest_worker import BIN, Worker
from fleet import Nginx, free_port
from flightops import fetch
from polars.testing import assert_frame_equal

CLIENTS = 16
MIN_CREATIONS = 500
MIN_KILLS = 5


def test_creations_survive_workers_killed_with_sigkill(tmp_path):
    env = {"POLARWAY_HANDLE_STORE": "external", "POLARWAY_STATE_DIR": str(tmp_path)}
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    workers = [Worker(POLARWAY_BIND_ADDRESS=a, **env) for a in addresses]
    nginx = Nginx(addresses)
    received = []  # (handle, expected frame)
    lock = threading.Lock()
    stop = threading.Event()
    kills = []
    errors = []

    def killer():
        rng = random.Random(7)
        while len(kills) < MIN_KILLS or not stop.is_set():
            time.sleep(1.0)
            i = rng.randrange(3)
            workers[i].kill()
            kills.append(i)
            workers[i] = Worker(POLARWAY_BIND_ADDRESS=addresses[i], **env)
            if len(kills) >= MIN_KILLS and stop.is_set():
                break

    def client(n):
        pw = polarway.connect(nginx.location,
                              retry=polarway.RetryPolicy(attempts=30, initial=0.05, maximum=1.0))
        i = 0
        while True:
            with lock:
                enough = len(received) >= MIN_CREATIONS and len(kills) >= MIN_KILLS
            if enough:
                return
            frame = pl.DataFrame({"k": list(range(100)), "v": [n * 100_000 + i] * 100})
            try:
                up = pw.upload(frame, idempotency_key=f"client{n}-{i}")
                top = up.filter(pl.col("k") >= 90).persist()
            except Exception as err:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(err))
                return
            with lock:
                received.append((up.handle, frame))
                received.append((top.handle, frame.filter(pl.col("k") >= 90)))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    chaos = threading.Thread(target=killer)
    chaos.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    stop.set()
    chaos.join(timeout=120)
    try:
        assert not errors, f"{len(errors)} failed creations, first: {errors[:3]}"
        assert len(received) >= MIN_CREATIONS
        assert len(kills) >= MIN_KILLS

        # Every handle any client received is readable on every live worker, with its content.
        directs = [w.client() for w in workers]
        for handle, want in received:
            for d in directs:
                assert_frame_equal(fetch(d, handle), want)

        # No partial artifact is visible: every result with metadata reads completely.
        results = pathlib.Path(tmp_path) / "results"
        metas = {p.stem for p in results.glob("*.json")}
        assert {h for h, _ in received} <= metas
        for stem in metas:
            assert (results / f"{stem}.arrow").exists(), f"meta without data: {stem}"

        # The sweep removes what the killed workers left half-written.
        out = subprocess.run([BIN, "gc", "--once"], capture_output=True, text=True,
                             env={**env, "PATH": os.environ.get("PATH", ""), "POLARWAY_ORPHAN_GRACE_SECS": "0"})
        assert out.returncode == 0, out.stderr
        leftovers = [p.name for p in results.iterdir() if "#" in p.name]
        assert not leftovers, leftovers
        data = {p.stem for p in results.glob("*.arrow")}
        assert data <= metas, f"data without meta after gc: {sorted(data - metas)[:3]}"
    finally:
        nginx.stop()
        for w in workers:
            if w.proc.poll() is None:
                w.stop()
