import pathlib
import sys

# The worker fixture is shared with the service's own Python tests.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "python"))

from conftest_worker import Worker, worker  # noqa: E402,F401
