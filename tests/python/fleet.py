"""Real parts for fleet tests: an S3-compatible server (moto) and nginx from Debian."""

import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def port_open(port) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class S3:
    """moto's S3 server on 127.0.0.1: it honours conditional create (If-None-Match)."""

    def __init__(self, bucket="polarway", log=None):
        """With `log`, the server's request log (one line per request) is written to that file."""
        self.port = free_port()
        self.log = log
        sink = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [shutil.which("moto_server") or os.path.join(os.path.dirname(os.sys.executable), "moto_server"),
             "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=sink)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: port_open(self.port), "moto")
        self.bucket = bucket
        req = urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT")
        urllib.request.urlopen(req).read()

    def _client(self):
        import boto3  # moto brings it
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")

    def put(self, key, body: bytes):
        """Stores an object."""
        self._client().put_object(Bucket=self.bucket, Key=key, Body=body)

    def keys(self, prefix):
        """The keys under `prefix`."""
        pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def requests(self):
        """The requests served so far, from the server's log: `METHOD /bucket/key` (unquoted)."""
        out = []
        for line in pathlib.Path(self.log).read_text().splitlines():
            found = re.search(r'"([A-Z]+) (\S+) HTTP', line)
            if found:
                out.append(f"{found.group(1)} {urllib.parse.unquote(found.group(2))}")
        return out

    def env(self, prefix):
        return {
            "POLARWAY_HANDLE_STORE": "external",
            "POLARWAY_STATE_URL": f"s3://{self.bucket}/{prefix}",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
        }

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Nginx:
    """nginx running deploy/nginx-grpc.conf, with the upstream pointed at the given workers."""

    def __init__(self, addresses, tls_dir=None):
        """With `tls_dir`, runs deploy/nginx-grpc-tls.conf with its files taken from that directory."""
        self.dir = tempfile.mkdtemp(prefix="polarway-nginx-")
        self.port = free_port()
        conf_name = "nginx-grpc-tls.conf" if tls_dir else "nginx-grpc.conf"
        site = (ROOT / "deploy" / conf_name).read_text()
        if tls_dir:
            site = site.replace("/etc/polarway/tls/", f"{tls_dir}/")
        site = re.sub(r"(?m)^\s*server 127\.0\.0\.1:\d+ [^\n]*\n", "", site)
        servers = "".join(f"    server {a} max_fails=1 fail_timeout=5s;\n" for a in addresses)
        site = site.replace("    keepalive 64;", servers + "\n    keepalive 64;")
        site = re.sub(r"listen 127\.0\.0\.1:8815 ", f"listen 127.0.0.1:{self.port} ", site)
        main = f"""
user root;
daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {self.dir}/access.log;
    {site}
}}
"""
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(main)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        subprocess.run([nginx, "-t", "-c", conf, "-p", self.dir], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = subprocess.Popen([nginx, "-c", conf, "-p", self.dir])
        wait_for(lambda: port_open(self.port), "nginx")
        self.location = f"{'grpc+tls' if tls_dir else 'grpc'}://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


AZURITE_ACCOUNT = "devstoreaccount1"
# The emulator's published development key (not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Azurite:
    """Azurite (npm) blob service on 127.0.0.1 for az:// stores."""

    def __init__(self, container="polarway"):
        import base64
        import datetime
        import hashlib
        import hmac

        self.dir = tempfile.mkdtemp(prefix="polarway-azurite-")
        self.port = free_port()
        binary = os.environ.get("AZURITE_BLOB", "azurite-blob")
        self.proc = subprocess.Popen(
            [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", self.dir,
             "--disableTelemetry", "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), "azurite")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.container = container
        # Create the container with a SharedKey-signed request.
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
        version = "2021-08-06"
        to_sign = "\n".join(["PUT"] + [""] * 11 + [
            f"x-ms-date:{date}", f"x-ms-version:{version}",
            f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"])
        signature = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
        req = urllib.request.Request(
            f"{self.endpoint}/{AZURITE_ACCOUNT}/{container}?restype=container", method="PUT",
            headers={"x-ms-date": date, "x-ms-version": version,
                     "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature}", "Content-Length": "0"})
        urllib.request.urlopen(req).read()

    def env(self, prefix):
        return {
            "POLARWAY_HANDLE_STORE": "external",
            "POLARWAY_STATE_URL": f"az://{self.container}/{prefix}",
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": self.endpoint,
        }

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
