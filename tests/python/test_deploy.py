"""Static checks of the deployment files; tests/python/test_containers.py runs them."""

import pathlib
import re
import shutil
import subprocess

import pytest
import yaml
from fleet import ROOT


def test_dockerfile_is_multi_stage_non_root_with_health_check():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text)
    assert len(stages) >= 2, "multi-stage"
    bases = {alias: base for base, alias in stages}
    final = stages[-1][0]
    while final in bases:
        final = bases[final]
    assert "slim" in final, f"small runtime image: {final}"
    assert stages[-1][1] == "runtime", "the default target is the runtime built from source"
    user = re.findall(r"(?m)^USER\s+(\S+)", text)
    assert user and user[-1] not in ("root", "0")
    assert "POLARWAY_BIND_ADDRESS=0.0.0.0:50051" in text
    assert re.search(r"(?m)^HEALTHCHECK\s", text)
    assert re.search(r"(?m)^ENTRYPOINT\s+\[\"/usr/local/bin/polarway-grpc\"\]", text)
    # Every file the build copies exists.
    for src in re.findall(r"(?m)^COPY\s+(?!--from)(.+)\s+\S+$", text):
        for path in src.split():
            assert (ROOT / path).exists(), path


@pytest.mark.parametrize("name,store", [("docker-compose.yml", "POLARWAY_STATE_URL"),
                                        ("docker-compose.volume.yml", "POLARWAY_STATE_DIR")])
def test_compose_files_wire_three_workers_behind_their_own_nginx(name, store):
    compose = yaml.safe_load((ROOT / "deploy" / name).read_text())
    services = compose["services"]
    workers = [n for n in services if re.fullmatch(r"worker\d", n)]
    assert len(workers) == 3
    hosts = services["nginx"]["extra_hosts"]
    for worker in workers:
        env = services[worker]["environment"]
        assert env["POLARWAY_HANDLE_STORE"] == "external" and env[store]
        assert "ports" not in services[worker], "workers are reached through nginx only"
        address = services[worker]["networks"]["default"]["ipv4_address"]
        assert f"{worker}:{address}" in hosts, "nginx finds each worker at its fixed address"
    assert services["nginx"]["ports"] == ["${POLARWAY_PUBLISH:-8815}:8815"]
    nginx_conf = (ROOT / "deploy" / "nginx-compose.conf").read_text()
    for worker in workers:
        assert f"server {worker}:50051" in nginx_conf
    for image in [s.get("image") for s in services.values() if s.get("image")]:
        assert ":" in image and not image.endswith(":latest") or image.startswith("${"), f"pinned image: {image}"


def test_nginx_configs_parse():
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    for conf in ["nginx-grpc.conf"]:
        site = (ROOT / "deploy" / conf).read_text()
        main = f"events {{}}\nhttp {{\n{site}\n}}\n"
        path = pathlib.Path("/tmp") / f"polarway-lint-{conf}"
        path.write_text(main)
        out = subprocess.run([nginx, "-t", "-c", str(path), "-p", "/tmp"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_systemd_unit_runs_the_worker_unprivileged_and_hardened():
    unit = (ROOT / "deploy" / "polarway-grpc.service").read_text()
    assert "ExecStart=/usr/local/bin/polarway-grpc" in unit
    assert re.search(r"(?m)^User=polarway$", unit)
    assert "KillSignal=SIGTERM" in unit
    for setting in ["NoNewPrivileges=true", "ProtectSystem=strict", "EnvironmentFile=-/etc/polarway/polarway.env"]:
        assert re.search(rf"(?m)^{re.escape(setting)}$", unit), setting


def test_grafana_dashboard_plots_only_exported_metrics():
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exported = set(re.findall(r"polarway_[a-z_]+", (ROOT / "src" / "metrics.rs").read_text()))
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"polarway_[a-z_]+", target["expr"]))
    histogram_series = {f"{m}_bucket" for m in exported}
    assert used, "the dashboard plots something"
    assert used <= exported | histogram_series, f"unknown metrics: {used - exported - histogram_series}"
    for needed in ["polarway_requests_total", "polarway_request_duration_seconds_bucket",
                   "polarway_store_written_bytes_total", "polarway_handles_created_total"]:
        assert needed in used
