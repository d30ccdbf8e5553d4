"""Static checks of the deployment files (no Docker engine runs on the test machines)."""

import pathlib
import re
import shutil
import subprocess

import yaml

from fleet import ROOT


def test_dockerfile_is_multi_stage_non_root_with_health_check():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"(?m)^FROM\s+(\S+)", text)
    assert len(stages) >= 2, "multi-stage"
    assert "slim" in stages[-1], "small runtime image"
    user = re.findall(r"(?m)^USER\s+(\S+)", text)
    assert user and user[-1] not in ("root", "0")
    assert "POLARWAY_BIND_ADDRESS=0.0.0.0:50051" in text
    assert re.search(r"(?m)^HEALTHCHECK\s", text)
    assert re.search(r"(?m)^ENTRYPOINT\s+\[\"/usr/local/bin/polarway-grpc\"\]", text)
    # Every file the build copies exists.
    for src in re.findall(r"(?m)^COPY\s+(?!--from)(.+)\s+\S+$", text):
        for path in src.split():
            assert (ROOT / path).exists(), path


def test_compose_file_resolves_and_wires_workers_behind_nginx():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    workers = [n for n in services if re.fullmatch(r"worker\d", n)]
    assert len(workers) == 3
    for name in workers:
        env = services[name]["environment"]
        assert env["POLARWAY_HANDLE_STORE"] == "external"
        assert env["POLARWAY_STATE_URL"].startswith("s3://")
        assert "ports" not in services[name], "workers are reached through nginx only"
    volume_workers = [n for n in services if n.startswith("worker-v")]
    assert all(services[n]["environment"]["POLARWAY_STATE_DIR"] for n in volume_workers)
    assert services["nginx"]["ports"] == ["8815:8815"]
    nginx_conf = (ROOT / "deploy" / "nginx-compose.conf").read_text()
    for name in workers:
        assert f"server {name}:50051" in nginx_conf
    for image in [s.get("image") for s in services.values() if s.get("image")]:
        assert ":" in image and not image.endswith(":latest"), f"pinned image: {image}"


def test_nginx_configs_parse():
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    for conf in ["nginx-grpc.conf"]:
        site = (ROOT / "deploy" / conf).read_text()
        main = f"events {{}}\nhttp {{\n{site}\n}}\n"
        path = pathlib.Path("/tmp") / f"polarway-lint-{conf}"
        path.write_text(main)
        out = subprocess.run([nginx, "-t", "-c", str(path), "-p", "/tmp"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_systemd_unit_runs_the_worker_unprivileged():
    unit = (ROOT / "deploy" / "polarway-grpc.service").read_text()
    assert "ExecStart=/usr/local/bin/polarway-grpc" in unit
    assert re.search(r"(?m)^User=polarway$", unit)
    assert "KillSignal=SIGTERM" in unit
    verify = shutil.which("systemd-analyze")
    if verify:
        subprocess.run([verify, "verify", "--man=no", str(ROOT / "deploy" / "polarway-grpc.service")],
                       capture_output=True)


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
