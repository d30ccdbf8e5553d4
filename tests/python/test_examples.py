"""flight-sql-examples/ run against a live worker and check their own output."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_worker import BIN

EXAMPLES = Path(__file__).resolve().parents[2] / "flight-sql-examples"


@pytest.mark.parametrize("script", ["adbc_polars.py", "sql_and_dataframes.py"])
def test_python_example(worker, script):
    run = subprocess.run([sys.executable, str(EXAMPLES / script), worker.location],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{script.removesuffix('.py')}: OK" in run.stdout


def test_rust_example(worker):
    binary = Path(os.path.dirname(BIN)) / "examples" / "flight_sql"
    assert binary.exists(), f"{binary}: build it with `cargo build --examples`"
    run = subprocess.run([str(binary), f"http://{worker.address}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "flight_sql: OK" in run.stdout
    assert "example_points" in run.stdout
