"""The metrics and health endpoint of a real worker, scraped over HTTP."""

import re
import urllib.error
import urllib.request

import polars as pl
import pytest
from flightops import action, fetch, upload


def scrape(worker, path="/metrics"):
    with urllib.request.urlopen(f"http://{worker.metrics_address}{path}") as resp:
        return resp.status, resp.read().decode()


def value(text, name, **labels):
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{name}" + (rf"\{{{re.escape(wanted)}\}}" if labels else "") + r" (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def test_requests_results_and_limits_are_counted(worker, client):
    df = pl.DataFrame({"sym": ["a", "b"], "qty": [1, 2]})
    h = upload(client, "t", df)["handle"]
    action(client, "filter", {"input": h, "predicate": "qty > 1"})
    with pytest.raises(Exception):
        action(client, "filter", {"input": h, "predicate": "nope > 1"})
    fetch(client, h)
    status, text = scrape(worker)
    assert status == 200
    assert value(text, "polarway_requests_total", code="OK", method="DoPut") == 1
    assert value(text, "polarway_requests_total", code="OK", method="DoAction") == 1
    assert value(text, "polarway_requests_total", code="INVALID_ARGUMENT", method="DoAction") == 1
    assert value(text, "polarway_requests_total", code="OK", method="DoGet") == 1
    assert value(text, "polarway_handles_created_total") == 2
    assert value(text, "polarway_request_duration_seconds_count", method="DoAction") == 2
    assert "polarway_requests_in_flight" in text
    assert "pw1_" not in text, "no handles as labels"


def test_health_and_readiness(worker):
    assert scrape(worker, "/healthz") == (200, "ok")
    assert scrape(worker, "/readyz") == (200, "ready")
    with pytest.raises(urllib.error.HTTPError):
        scrape(worker, "/nothing-here")
