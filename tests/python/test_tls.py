"""TLS and mTLS against the real binary, with certificates generated here: the client-certificate
matrix, rotation on disk without a restart, certificates naming tenants, and nginx with TLS on
both hops."""

import hashlib
import json
import os
import shutil
import socket
import ssl

import polars as pl
import polarway
import pyarrow.flight as flight
import pytest
from certs import CA
from conftest_worker import Worker
from fleet import Nginx, wait_for
from flightops import action, fetch, upload
from polars.testing import assert_frame_equal
from test_fleet import CHAIN, trades


@pytest.fixture
def pki(tmp_path):
    ca = CA(str(tmp_path))
    other = CA(str(tmp_path), name="another-ca")
    return {
        "dir": str(tmp_path),
        "ca": ca,
        "server": ca.issue("worker", names=("localhost", "127.0.0.1", "polarway-worker")),
        "client": ca.issue("client", client=True, server=False),
        "other_client": other.issue("intruder", client=True, server=False),
        "expired_client": ca.issue("expired", client=True, server=False, expired=True),
    }


def tls_env(pki, tls_dir=None, **extra):
    """Worker settings with its certificate copied to `tls_dir` (so a test can rotate it)."""
    cert, key = pki["server"].cert, pki["server"].key
    if tls_dir:
        os.makedirs(tls_dir, exist_ok=True)
        cert, key = shutil.copy(cert, f"{tls_dir}/tls.crt"), shutil.copy(key, f"{tls_dir}/tls.key")
    return {"POLARWAY_TLS_CERT": cert, "POLARWAY_TLS_KEY": key,
            "POLARWAY_TLS_CLIENT_CA": pki["ca"].path, "POLARWAY_TLS_RELOAD_SECS": "1", **extra}


def client_for(worker, pki, pair="client", location=None):
    with open(pki["ca"].path, "rb") as f:
        options = {"tls_root_certs": f.read()}
    if pair:
        cert, key = pki[pair].read()
        options.update(cert_chain=cert, private_key=key)
    return flight.FlightClient(location or worker.location, **options)


def served_certificate(address, pki):
    """SHA-256 of the certificate a new connection is given."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=pki["ca"].path)
    context.load_cert_chain(pki["client"].cert, pki["client"].key)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def refused(client):
    with pytest.raises((flight.FlightUnavailableError, flight.FlightUnauthenticatedError,
                        flight.FlightInternalError)):
        list(client.list_actions(options=flight.FlightCallOptions(timeout=10)))


def test_client_certificate_matrix(pki):
    worker = Worker(**tls_env(pki))
    try:
        good = client_for(worker, pki)
        frame = pl.DataFrame({"x": [1, 2, 3]})
        handle = upload(good, "t", frame)["handle"]
        assert_frame_equal(fetch(good, handle), frame)

        refused(client_for(worker, pki, pair=None))            # no client certificate
        refused(client_for(worker, pki, pair="other_client"))  # issued by another CA
        refused(client_for(worker, pki, pair="expired_client"))
        refused(flight.FlightClient(f"grpc://{worker.address}"))  # plaintext

        # The refusals are counted, and the worker still serves the good client.
        assert_frame_equal(fetch(good, handle), frame)
    finally:
        worker.stop()


def test_rotated_certificate_reaches_new_connections_without_a_restart(pki, tmp_path):
    tls_dir = str(tmp_path / "live")
    worker = Worker(**tls_env(pki, tls_dir))
    try:
        before = served_certificate(worker.address, pki)
        assert before == pki["server"].der_sha256()
        live = client_for(worker, pki)
        handle = upload(live, "t", pl.DataFrame({"x": [1]}))["handle"]

        rotated = pki["ca"].issue("worker-rotated", names=("localhost", "127.0.0.1"))
        # Replace atomically, key first, as an operator's tooling (or cert-manager) would.
        for src, dst in ((rotated.key, "tls.key"), (rotated.cert, "tls.crt")):
            shutil.copy(src, f"{tls_dir}/{dst}.new")
            os.replace(f"{tls_dir}/{dst}.new", f"{tls_dir}/{dst}")
        wait_for(lambda: served_certificate(worker.address, pki) == rotated.der_sha256(),
                 "the rotated certificate", timeout=15)
        # The connection opened before the rotation still works.
        assert fetch(live, handle)["x"].to_list() == [1]

        # A broken file keeps the current certificate and says why.
        with open(f"{tls_dir}/tls.crt", "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        wait_for(lambda: any("keeping the current certificate" in r["fields"].get("message", "")
                             for r in worker.log), "the warning about the bad file", timeout=15)
        assert served_certificate(worker.address, pki) == rotated.der_sha256()
        assert fetch(client_for(worker, pki), handle)["x"].to_list() == [1]
        assert worker.proc.poll() is None
    finally:
        worker.stop()


def test_a_listed_client_certificate_names_its_tenant(pki, tmp_path):
    second = pki["ca"].issue("client-two", client=True, server=False)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({
        "signing_key": "a-long-shared-signing-key-for-tests",
        "tokens": [{"tenant": "beta", "sha256": hashlib.sha256(b"beta-token").hexdigest()}],
        "certificates": [{"tenant": "acme", "sha256": pki["client"].der_sha256()}],
    }))
    worker = Worker(**tls_env(pki, POLARWAY_AUTH_TOKENS_FILE=str(tokens)))
    try:
        acme = client_for(worker, pki)  # no token: the certificate is enough
        handle = upload(acme, "t", pl.DataFrame({"x": [1]}))["handle"]
        assert fetch(acme, handle)["x"].to_list() == [1]

        pki["client-two"] = second
        unlisted = client_for(worker, pki, pair="client-two")
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(unlisted.list_flights())
        beta = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer beta-token")])
        with pytest.raises(Exception, match="(?i)not found"):
            fetch(unlisted, handle, options=beta)

        # The Python helper with CA, certificate, key and token.
        with open(pki["ca"].path, "rb") as f:
            ca = f.read()
        cert, key = second.read()
        pw = polarway.connect(worker.location, tls_root_certs=ca, cert_chain=cert, private_key=key,
                              token="beta-token")
        frame = pl.DataFrame({"y": [3, 1, 2]})
        assert pw.upload(frame).sort("y").collect()["y"].to_list() == [1, 2, 3]
    finally:
        worker.stop()


def test_chain_through_nginx_with_tls_on_both_hops(pki, tmp_path):
    ca = pki["ca"]
    ca.issue("nginx", names=("localhost", "127.0.0.1"))
    ca.issue("nginx-client", client=True, server=False)
    shutil.copy(ca.path, f"{pki['dir']}/ca.crt")
    env = tls_env(pki, POLARWAY_HANDLE_STORE="external", POLARWAY_STATE_DIR=str(tmp_path / "state"))
    workers = [Worker(**env) for _ in range(3)]
    nginx = Nginx([w.address for w in workers], tls_dir=pki["dir"])
    try:
        client = client_for(None, pki, location=nginx.location)
        local = trades()
        handle = upload(client, "trades", local)["handle"]
        for op, params, local_op in CHAIN:
            handle = action(client, op, {"input": handle, **params})["handle"]
            local = local_op(local)
        assert_frame_equal(fetch(client, handle), local, check_dtypes=False)
        counts = [w.persisted() for w in workers]
        assert sum(counts) == 21 and sum(1 for c in counts if c > 0) >= 2, counts

        # nginx requires a client certificate too, and a worker refuses a client without one.
        refused(client_for(None, pki, pair=None, location=nginx.location))
        refused(client_for(workers[0], pki, pair=None))
        refused(flight.FlightClient(f"grpc://{workers[0].address}"))
    finally:
        nginx.stop()
        for w in workers:
            w.stop()
