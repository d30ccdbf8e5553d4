"""Token auth against the real binary, from pyarrow: bearer tokens and authenticate_basic_token."""

import hashlib
import json

import pyarrow.flight as flight
import pytest
from conftest_worker import Worker


@pytest.fixture
def secured(tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({
        "signing_key": "a-long-shared-signing-key-for-tests",
        "tokens": [{"tenant": "acme", "sha256": hashlib.sha256(b"right-token").hexdigest()}],
        "users": [{"username": "alice", "password_sha256": hashlib.sha256(b"alice-pw").hexdigest(),
                   "tenant": "acme"}],
    }))
    worker = Worker(POLARWAY_AUTH_TOKENS_FILE=str(tokens))
    yield worker
    worker.stop()


def test_token_matrix(secured):
    client = secured.client()
    with pytest.raises(flight.FlightUnauthenticatedError):
        list(client.list_actions())
    wrong = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer wrong-token")])
    with pytest.raises(flight.FlightUnauthenticatedError):
        list(client.list_actions(options=wrong))
    right = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer right-token")])
    assert any(a.type == "filter" for a in client.list_actions(options=right))


def test_authenticate_basic_token_gives_a_working_bearer(secured):
    client = secured.client()
    header = client.authenticate_basic_token(b"alice", b"alice-pw")
    assert header[0] == b"authorization" and header[1].startswith(b"Bearer pwt1.acme.")
    options = flight.FlightCallOptions(headers=[header])
    assert list(client.list_flights(options=options)) == []
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token(b"alice", b"wrong")
