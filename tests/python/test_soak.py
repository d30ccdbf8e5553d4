"""The soak and overload run (benches/soak.py) in its 2-minute form."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_soak_overload_and_rolling_restart():
    minutes = os.environ.get("POLARWAY_SOAK_MINUTES", "2")
    run = subprocess.run([sys.executable, str(ROOT / "benches" / "soak.py"), "--minutes", minutes],
                         capture_output=True, text=True, timeout=60 * float(minutes) + 240)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "soak: OK" in run.stdout
