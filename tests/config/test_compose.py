"""docker-compose.yml scales: `docker compose up --scale web=N --scale worker=M` starts every replica side by
side, each worker on a run root of its own, behind one published port. Read from the file, as compose reads
it (there is no Docker daemon in the test environment; `docker compose config` checks the syntax)."""

import re
from pathlib import Path
from typing import Any

import yaml  # PyYAML comes with drf-spectacular

ROOT = Path(__file__).resolve().parents[2]


def services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def mounts(service: dict[str, Any]) -> list[str]:
    return [str(volume).split(":") for volume in service.get("volumes", [])]


def test_web_and_worker_replicas_publish_no_port_and_take_no_fixed_name() -> None:
    for name in ("web", "worker"):
        service = services()[name]
        assert "ports" not in service, f"{name}: a published port lets only one replica start"
        assert not {"container_name", "hostname"} & set(service), f"{name}: replicas would share the name"


def test_the_proxy_publishes_the_port_and_spreads_over_the_web_service() -> None:
    proxy = services()["proxy"]
    assert proxy["ports"] == ["8000:8000"]
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert re.search(r"dynamic a web 8000\b", caddyfile)
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]


def test_each_worker_replica_has_a_run_root_of_its_own_and_shares_stored_files() -> None:
    worker = services()["worker"]
    run_root = worker.get("environment", {}).get("RUN_ROOT") or "/app/var/runs"
    assert [run_root] in mounts(worker), "RUN_ROOT must be an anonymous volume: one per replica"
    assert ["media", "/app/var/media"] in mounts(worker)
    assert ["media", "/app/var/media"] in mounts(services()["web"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "/app/var/runs" in dockerfile and "/app/var/media" in dockerfile  # made, owned by the platform user
