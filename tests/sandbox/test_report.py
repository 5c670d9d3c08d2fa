"""The sandbox's report of itself: the in-sandbox init's probes and verdict, run here outside any sandbox
(where every namespace is the host's), and the worker's wait for it."""

import asyncio
import importlib.machinery
import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from sandbox.report import host_namespaces, missing_layers_message, unsandboxed_report, wait_for_report

INIT = Path(__file__).resolve().parents[2] / "sandbox" / "bin" / "sandbox-init"


def load_init() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("sandbox_init", str(INIT))
    spec = importlib.util.spec_from_loader("sandbox_init", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def fake_cgroup(path: Path, files: dict[str, str], member: bool = True) -> str:
    path.mkdir(parents=True)
    (path / "cgroup.procs").write_text(f"1\n{os.getpid() if member else 2}\n")
    for name, value in files.items():
        (path / name).write_text(value + "\n")
    return str(path)


def test_the_report_is_json_without_the_json_module(tmp_path: Path) -> None:
    init = load_init()
    report = {"b": [1, 2.5, None, True], "a": {"path": 'C:\\x "q"\n'}, "c": False, "d": ""}

    assert json.loads(init.dump(report)) == report


def test_v1_limits_are_read_where_this_process_is_a_member(tmp_path: Path) -> None:
    init = load_init()
    cgroups = {
        "memory": fake_cgroup(tmp_path / "memory", {"memory.limit_in_bytes": str(512 * 1024 * 1024)}),
        "pids": fake_cgroup(tmp_path / "pids", {"pids.max": "256"}),
        "cpu": fake_cgroup(tmp_path / "cpu", {"cpu.cfs_quota_us": "150000", "cpu.cfs_period_us": "100000"}),
        "tools": fake_cgroup(tmp_path / "tools", {"pids.max": "224"}, member=False),
    }

    limits = init.cgroup_limits(cgroups)

    assert limits == {"memory_bytes": 512 * 1024 * 1024, "max_processes": 256, "cpus": 1.5, "tools_max_processes": 224}


def test_v1_no_limit_and_a_cgroup_this_process_is_not_in_count_as_none(tmp_path: Path) -> None:
    init = load_init()
    cgroups = {
        "memory": fake_cgroup(tmp_path / "memory", {"memory.limit_in_bytes": str(2**63 - 4096)}),
        "pids": fake_cgroup(tmp_path / "pids", {"pids.max": "256"}, member=False),
        "cpu": fake_cgroup(tmp_path / "cpu", {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}),
    }

    assert init.cgroup_limits(cgroups) == {
        "memory_bytes": None,
        "max_processes": None,
        "cpus": None,
        "tools_max_processes": None,
    }


def test_v2_limits_come_from_one_directory(tmp_path: Path) -> None:
    init = load_init()
    files = {"memory.max": "1073741824", "pids.max": "max", "cpu.max": "50000 100000"}
    cgroups = {
        "unified": fake_cgroup(tmp_path / "run", files),
        "tools": fake_cgroup(tmp_path / "tools", {"pids.max": "96"}),
    }

    assert init.cgroup_limits(cgroups) == {
        "memory_bytes": 1073741824,
        "max_processes": None,
        "cpus": 0.5,
        "tools_max_processes": 96,
    }


def run_init(tmp_path: Path, required: list[str]) -> tuple[subprocess.CompletedProcess[str], dict]:
    lines = [
        f"report {tmp_path / 'sandbox.json'}",
        f"host_uid {os.getuid()}",
        *(f"namespace {name} {inode}" for name, inode in host_namespaces().items()),
        " ".join(["required", *required]),
    ]
    (tmp_path / "config").write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", str(INIT), str(tmp_path / "config"), "--", "/bin/echo", "the-cli-ran"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return done, json.loads((tmp_path / "sandbox.json").read_text())


def test_outside_a_sandbox_the_init_reports_the_hosts_namespaces_and_refuses_what_is_required(tmp_path: Path) -> None:
    done, report = run_init(tmp_path, ["user", "net", "seccomp"])

    assert done.returncode == 78 and "the-cli-ran" not in done.stdout
    assert "required layer(s) missing: user, net, seccomp" in done.stderr
    assert report["missing_layers"] == ["user", "net", "seccomp"]
    assert not any(report["layers"][name] for name in ("user", "mount", "pid", "net", "ipc", "uts", "cgroup"))
    assert report["seccomp"]["mode"] == 0 and report["egress"] == "none"
    assert report["layers"]["read_only_system"] is False
    assert "lo" in report["network_interfaces"]


def test_with_nothing_required_the_init_reports_and_becomes_the_command(tmp_path: Path) -> None:
    done, report = run_init(tmp_path, [])

    assert done.returncode == 0 and done.stdout.strip() == "the-cli-ran"
    assert report["missing_layers"] == [] and report["probe_ms"] < 1000
    assert report["seccomp"]["unix_sockets"] is True  # no filter was configured to close them


def test_the_unsandboxed_report_says_no_layer_is_in_force() -> None:
    report = unsandboxed_report()

    assert report["mode"] == "unsandboxed" and not any(report["layers"].values())
    assert set(report["layers"]) >= {"user", "seccomp", "capabilities", "memory", "cpu"}


def test_the_message_names_the_missing_layers() -> None:
    message = missing_layers_message({"missing_layers": ["seccomp", "cpu"]})

    assert "lacks required layer(s): seccomp, cpu." in message and "SANDBOX_REQUIRED_LAYERS" in message


@pytest.mark.asyncio
async def test_the_worker_waits_for_the_report_or_for_the_launch_to_end(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    never = asyncio.get_running_loop().create_future()
    launching = asyncio.ensure_future(never)

    async def write_soon() -> None:
        await asyncio.sleep(0.05)
        path.write_text(json.dumps({"mode": "bubblewrap"}))

    writer = asyncio.create_task(write_soon())
    assert await wait_for_report(path, launching) == {"mode": "bubblewrap"}
    await writer

    path.unlink()
    launching.cancel()
    await asyncio.gather(launching, return_exceptions=True)
    assert await wait_for_report(path, launching) is None
