"""The client's copies of the worker's constants: the Polars releases it supports, and the
expression nodes the worker refuses. Each is written once per language; these tests fail when
one side changes without the other."""

import re
from pathlib import Path

import tomllib
from polarway import wire

ROOT = Path(__file__).resolve().parents[2]
NATIVE = (ROOT / "src" / "ops" / "expr" / "native.rs").read_text()


def worker_forbidden() -> set[str]:
    block = re.search(r"const FORBIDDEN: &\[\(&str, &str\)\] = &\[(.*?)\];", NATIVE, re.S)
    assert block, "FORBIDDEN not found in native.rs"
    return set(re.findall(r'\(\s*"(\w+)",', block.group(1)))


def test_the_refused_node_kinds_are_the_workers():
    assert set(wire._REFUSED) == worker_forbidden()


def test_the_supported_polars_range_is_the_workers_and_the_packages():
    accepted = re.search(r'pub const ACCEPTED_VERSIONS: &str = "Python Polars (\d+)\.(\d+) to (\d+)\.(\d+)";', NATIVE)
    assert accepted, "ACCEPTED_VERSIONS not found in native.rs"
    low_major, low_minor, high_major, high_minor = (int(g) for g in accepted.groups())
    assert wire.SUPPORTED_POLARS == f">={low_major}.{low_minor},<{high_major}.{high_minor + 1}"
    project = tomllib.loads((ROOT / "python" / "pyproject.toml").read_text())["project"]
    assert f"polars{wire.SUPPORTED_POLARS}" in project["dependencies"]
