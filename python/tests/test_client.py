"""The polarway client package against real polarway-grpc processes."""

import time

import polars as pl
import polarway
import pyarrow as pa
import pytest
from conftest_worker import Worker
from polars.testing import assert_frame_equal


def trades() -> pl.DataFrame:
    return pl.DataFrame({
        "sym": ["AAPL", "MSFT", "AAPL", "GOOG", "MSFT", "AAPL"] * 50,
        "qty": list(range(300)),
        "price": [100.0 + i % 7 for i in range(300)],
    })


def test_lazy_chain_is_one_pipeline_equal_to_local_polars(worker):
    pw = polarway.connect(worker.location)
    df = pw.upload(trades(), name="trades")
    got = (df.filter(pl.col("qty") > 10)
             .with_columns(notional=pl.col("qty") * pl.col("price"))
             .group_by("sym").agg(total=pl.col("qty").sum(), hi=pl.col("notional").max())
             .sort("sym")
             .collect())
    want = (trades().lazy().filter(pl.col("qty") > 10)
            .with_columns(notional=pl.col("qty") * pl.col("price"))
            .group_by("sym").agg(total=pl.col("qty").sum(), hi=pl.col("notional").max())
            .sort("sym").collect())
    assert_frame_equal(got, want)
    assert worker.persisted() == 2, "one upload and one pipeline"


def test_upload_retry_is_safe_with_an_idempotency_key(worker):
    pw = polarway.connect(worker.location)
    a = pw.upload(trades(), idempotency_key="load-1")
    b = pw.upload(trades(), idempotency_key="load-1")
    assert a.handle == b.handle


def test_chain_survives_a_worker_killed_mid_chain(tmp_path):
    env = {"POLARWAY_HANDLE_STORE": "external", "POLARWAY_STATE_DIR": str(tmp_path)}
    workers = [Worker(**env), Worker(**env)]
    try:
        pw = polarway.connect([w.location for w in workers])
        df = pw.upload(trades())
        step1 = df.filter(pl.col("qty") > 100).persist()
        # Kill the worker this chain is routed to; the next calls must go to the other one.
        preferred = pw._order(step1.affinity)[0]
        victim = next(w for w in workers if w.location == preferred)
        victim.kill()
        got = step1.sort("qty", descending=True).head(5).collect()
        want = trades().filter(pl.col("qty") > 100).sort("qty", descending=True).head(5)
        assert_frame_equal(got, want)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.stop()


def test_errors_that_are_not_transient_are_not_retried(worker):
    # Fifty quick attempts: a client that retried a refusal would send the call fifty times.
    pw = polarway.connect(worker.location, retry=polarway.RetryPolicy(attempts=50, initial=0.01))
    df = pw.upload(trades())
    with pytest.raises(pa.ArrowInvalid, match="nope"):
        df.filter(pl.col("nope") > 1).collect()

    def refusals() -> int:
        return sum(1 for r in worker.log if r["fields"].get("message") == "request refused")

    deadline = time.monotonic() + 5
    while refusals() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # any repeat was answered before the error reached us; let its log line land
    assert refusals() == 1, f"the refused call reached the worker {refusals()} times"


def test_a_table_larger_than_one_message_uploads_in_batches():
    # 40 MB of rows against an 8 MiB message limit: one message would be refused.
    worker = Worker(POLARWAY_MAX_MESSAGE_BYTES=str(8 << 20))
    try:
        frame = pl.DataFrame({"a": range(2_500_000), "b": [1.5] * 2_500_000})
        remote = polarway.connect(worker.location).upload(frame)
        assert remote.collect_schema() == frame.schema
        assert remote.filter(pl.col("a") >= 2_499_998).collect()["a"].to_list() == [2_499_998, 2_499_999]
    finally:
        worker.stop()
