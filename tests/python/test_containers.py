"""The shipped deployment, run: the worker image from the Dockerfile, both compose fleets behind
nginx (deploy/docker-compose.volume.yml and deploy/docker-compose.yml), a worker killed, the fleet
restarted. The compose commands are the README's, run as written.

Where no container engine runs, every test here is skipped, and says so on the terminal.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import polars as pl
import pyarrow.flight as flight
import pytest
from conftest_worker import BIN
from fleet import ROOT, wait_for
from flightops import action, fetch, upload
from polars.testing import assert_frame_equal

IMAGE = "polarway-test:host"
WORKERS = ["worker1", "worker2", "worker3"]
# The fleets' own /24s, apart from the compose files' defaults so that a fleet a user runs here
# is not disturbed.
FLEETS = {
    "volume": ("deploy/docker-compose.volume.yml", "10.231.6"),
    "s3": ("deploy/docker-compose.yml", "10.231.5"),
}


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


def engine_problem():
    """Why the fleets cannot run here, or None."""
    for tool in ("docker", "docker-compose"):
        if not shutil.which(tool):
            return f"`{tool}` is not installed"
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"])
    if info.returncode != 0:
        return f"no container engine answers: {info.stderr.strip()[:200]}"
    check = run([str(ROOT / "scripts" / "images"), "--check", "debian:bookworm-slim", "nginx:1.27",
                 "motoserver/moto:5.2.5"])
    if check.returncode != 0:
        return f"base images are missing (run scripts/images): {check.stdout.strip()}"
    return None


@pytest.fixture(scope="module")
def engine():
    problem = engine_problem()
    if problem:
        sys.stderr.write(f"\n\n*** CONTAINER TESTS SKIPPED: {problem} ***\n\n")
        pytest.skip(f"container tests skipped: {problem}")


@pytest.fixture(scope="module")
def image(engine, tmp_path_factory):
    # The Dockerfile's `host` target around the binary the suite already built.
    context = tmp_path_factory.mktemp("image-context")
    (context / "deploy" / "bin").mkdir(parents=True)
    shutil.copy(shutil.which(BIN) or BIN, context / "deploy" / "bin" / "polarway-grpc")
    built = run(["docker", "build", "-q", "--target", "host", "-t", IMAGE, "-f", str(ROOT / "Dockerfile"),
                 str(context)])
    assert built.returncode == 0, built.stderr
    yield IMAGE
    run(["docker", "rmi", "-f", IMAGE])


def readme_commands(compose_file):
    """The README's container block: its `up` and `down` lines for this compose file."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*In containers\.\*\*.*?```sh\n(.*?)```", readme, re.S).group(1)
    lines = [line for line in block.splitlines() if compose_file in line]
    up = [line for line in lines if " up " in f"{line} "]
    down = [line for line in lines if " down" in line]
    assert len(up) == 1 and len(down) == 1, f"README names {compose_file}'s up and down: {lines}"
    assert "docker build -t polarway ." in block
    return up[0], down[0]


class Fleet:
    """One compose project, driven through docker-compose with the test's settings."""

    def __init__(self, kind, image):
        self.file, self.net = FLEETS[kind]
        self.project = f"polarway-test-{kind}"
        self.env = {**os.environ, "COMPOSE_PROJECT_NAME": self.project, "POLARWAY_IMAGE": image,
                    "POLARWAY_PUBLISH": "127.0.0.1:", "POLARWAY_NET": self.net}

    def shell(self, command, timeout=300):
        out = subprocess.run(command, shell=True, cwd=ROOT, env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, f"{command}: {out.stderr[-2000:]}"
        return out.stdout

    def compose(self, *args, timeout=300):
        out = run(["docker-compose", "-f", self.file, *args], cwd=ROOT, env=self.env, timeout=timeout)
        assert out.returncode == 0, f"docker-compose {' '.join(args)}: {out.stderr[-2000:]}"
        return out.stdout

    def container(self, service):
        return self.compose("ps", "-q", service).strip()

    def state(self, service):
        out = run(["docker", "inspect", "--format", "{{json .State}}", self.container(service)])
        return json.loads(out.stdout)

    def wait_healthy(self, services=WORKERS, timeout=180):
        def healthy():
            states = [self.state(s) for s in services]
            return all(s.get("Health", {}).get("Status") == "healthy" for s in states)
        wait_for(healthy, f"{self.project}: {services} healthy", timeout=timeout)

    def address(self, service):
        return f"{self.net}.{11 + WORKERS.index(service)}"

    def location(self):
        published = self.compose("port", "nginx", "8815").strip()
        assert published.startswith("127.0.0.1:"), f"nginx is published on loopback only: {published}"
        return f"grpc://{published}"

    def logs(self, service):
        return run(["docker", "logs", self.container(service)]).stdout

    def leftovers(self):
        """Containers, networks and volumes of this project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind in ("container", "network", "volume"):
            extra = ["-a"] if kind == "container" else []
            out = run(["docker", kind, "ls", *extra, "-q", "--filter", label]).stdout.split()
            found += [f"{kind} {name}" for name in out]
        return found


def trades(n=3000) -> pl.DataFrame:
    return pl.DataFrame({
        "sym": [["AAPL", "MSFT", "GOOG", "AMZN"][i % 4] for i in range(n)],
        "qty": [(i * 7) % 100 for i in range(n)],
        "price": [100.0 + (i % 50) for i in range(n)],
    })


def maker_of(fleet, handle):
    """The worker whose log says it persisted `handle`."""
    makers = []
    for service in WORKERS:
        for line in fleet.logs(service).splitlines():
            if not line.startswith("{"):
                continue
            fields = json.loads(line).get("fields", {})
            if fields.get("message") == "result persisted" and fields.get("handle") == handle:
                makers.append(service)
    assert makers, f"no worker logged persisting {handle}"
    return makers[0]


def wait_answering(location):
    def answers():
        try:
            return len(list(flight.FlightClient(location).list_actions())) > 0
        except flight.FlightError:
            return False
    wait_for(answers, f"{location} answers through nginx", timeout=60)


@pytest.mark.parametrize("kind", ["volume", "s3"])
def test_fleet_keeps_every_handle_through_a_killed_worker_and_a_restart(image, kind):
    fleet = Fleet(kind, image)
    up, down = readme_commands(fleet.file)
    assert not fleet.leftovers(), f"a previous run left {fleet.leftovers()}"
    started = time.monotonic()
    try:
        fleet.shell(up)
        fleet.wait_healthy()
        location = fleet.location()
        wait_answering(location)
        client = flight.FlightClient(location)

        # Upload, a chain, DoGet: all through nginx.
        local = trades()
        handles = {upload(client, "trades", local)["handle"]: local}
        handle = next(iter(handles))
        for op, params, step in [
            ("filter", {"predicate": "qty > 5"}, lambda f: f.filter(pl.col("qty") > 5)),
            ("with_columns", {"columns": {"notional": "qty * price"}},
             lambda f: f.with_columns(notional=pl.col("qty") * pl.col("price"))),
            ("sort", {"by": ["notional", "sym"], "descending": [True, False]},
             lambda f: f.sort(["notional", "sym"], descending=[True, False])),
        ]:
            handle = action(client, op, {"input": handle, **params})["handle"]
            local = step(local)
            handles[handle] = local
        assert_frame_equal(fetch(client, handle), local, check_dtypes=False)

        # Kill the worker that made the result; the handle is still served, and the chain goes on.
        maker = maker_of(fleet, handle)
        killed = run(["docker", "kill", fleet.container(maker)])
        assert killed.returncode == 0, killed.stderr
        assert not fleet.state(maker)["Running"], f"{maker} stays down after docker kill"
        slowest = 0.0
        for _ in range(9):
            t = time.monotonic()
            assert_frame_equal(fetch(client, handle), local, check_dtypes=False)
            slowest = max(slowest, time.monotonic() - t)
        handle = action(client, "filter", {"input": handle, "predicate": "sym <> 'GOOG'"})["handle"]
        local = local.filter(pl.col("sym") != "GOOG")
        handles[handle] = local
        assert_frame_equal(fetch(client, handle), local, check_dtypes=False)
        print(f"\n{kind}: with {maker} killed, the slowest of 9 DoGets took {slowest:.2f} s")

        # Restart the fleet: every service but moto, which keeps its objects only in memory and
        # stands in for a store that outlives the fleet.
        services = [s for s in fleet.compose("config", "--services").split() if s not in ("s3", "s3-bucket")]
        fleet.compose("restart", *services)
        fleet.wait_healthy()
        location = fleet.location()
        wait_answering(location)
        client = flight.FlightClient(location)
        lost = [h for h, want in handles.items() if not fetch(client, h).equals(want)]
        assert lost == [], f"handles lost across the restart: {lost}"

        # Health and metrics of each worker, on its own address.
        for service in WORKERS:
            assert fleet.state(service)["Health"]["Status"] == "healthy"
            with urllib.request.urlopen(f"http://{fleet.address(service)}:9464/metrics", timeout=5) as r:
                assert r.status == 200 and "polarway_requests_total" in r.read().decode()
            log = fleet.logs(service)
            assert "polarway-secret" not in log, f"{service} logged the S3 secret"
            errors = [line for line in log.splitlines() if '"level":"ERROR"' in line]
            assert errors == [], f"{service} logged errors: {errors[:3]}"
        print(f"{kind}: {len(handles)} handles, 0 lost; fleet up to checked in {time.monotonic() - started:.0f} s")
    finally:
        fleet.shell(down)
        assert fleet.leftovers() == [], "down -v removes containers, networks and volumes"


SYSTEMD_IMAGE = "polarway-images/systemd"


def test_systemd_unit_verifies_starts_serves_and_stops_the_worker(engine):
    """deploy/polarway-grpc.service under systemd as PID 1, set up as its header says."""
    if run(["docker", "image", "inspect", SYSTEMD_IMAGE]).returncode != 0:
        sys.stderr.write(f"\n\n*** SYSTEMD TEST SKIPPED: no {SYSTEMD_IMAGE} image (scripts/images) ***\n\n")
        pytest.skip(f"no {SYSTEMD_IMAGE} image")
    unit = (ROOT / "deploy" / "polarway-grpc.service").read_text()
    setup = [line[4:] for line in unit.splitlines()
             if line.startswith("#   ") and not line.startswith("#   install -m 0755")
             and "systemctl" not in line]
    assert any(line.startswith("useradd") for line in setup), setup
    name = "polarway-test-systemd"
    run(["docker", "rm", "-f", name])
    started = run(["docker", "run", "-d", "--name", name, "--tmpfs", "/run", "--tmpfs", "/run/lock",
                   "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", SYSTEMD_IMAGE])
    assert started.returncode == 0, started.stderr

    def sh(script, check=True):
        out = run(["docker", "exec", name, "bash", "-c", script])
        assert not check or out.returncode == 0, f"{script}: {out.stdout}{out.stderr}"
        return out

    try:
        wait_for(lambda: sh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded"),
                 "systemd is up", timeout=60)
        assert run(["docker", "cp", shutil.which(BIN) or BIN, f"{name}:/usr/local/bin/polarway-grpc"]).returncode == 0
        assert run(["docker", "cp", str(ROOT / "deploy" / "polarway-grpc.service"),
                    f"{name}:/etc/systemd/system/polarway-grpc.service"]).returncode == 0
        for line in setup:
            sh(line)
        sh("echo POLARWAY_BIND_ADDRESS=0.0.0.0:50051 >> /etc/polarway/polarway.env")
        verify = sh("systemd-analyze verify /etc/systemd/system/polarway-grpc.service", check=False)
        assert verify.returncode == 0 and "polarway-grpc" not in verify.stdout + verify.stderr, verify.stderr
        sh("systemctl daemon-reload && systemctl enable --now polarway-grpc")
        wait_for(lambda: sh("exec 3<>/dev/tcp/127.0.0.1/50051", check=False).returncode == 0,
                 "the unit's worker listens", timeout=60)
        pid = sh("systemctl show -p MainPID --value polarway-grpc").stdout.strip()
        assert sh(f"stat -c %U /proc/{pid}").stdout.strip() == "polarway", "the worker runs as the unit's user"

        # A real call from this machine to the worker the unit runs, hardening and all.
        address = run(["docker", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", name]).stdout.strip()
        client = flight.FlightClient(f"grpc://{address}:50051")
        local = trades(500)
        handle = upload(client, "trades", local)["handle"]
        handle = action(client, "filter", {"input": handle, "predicate": "qty > 50"})["handle"]
        assert_frame_equal(fetch(client, handle), local.filter(pl.col("qty") > 50), check_dtypes=False)

        exposure = sh("systemd-analyze security polarway-grpc --no-pager | tail -1").stdout.strip()
        print(f"\n{exposure}")
        # SIGTERM drains and the worker exits 0: systemd records a clean stop.
        sh("systemctl stop polarway-grpc")
        shown = sh("systemctl show -p Result -p ExecMainStatus polarway-grpc").stdout.split()
        assert shown == ["Result=success", "ExecMainStatus=0"], shown
    finally:
        run(["docker", "rm", "-f", name])
