"""A run's cgroups as sandbox.limits lays them out, on a fake cgroup tree (v1 and v2 alike): the run's limits, and
the tools' child whose process limit leaves room for the CLI, handed to the sandbox user as delegation asks."""

import os
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings

from sandbox import limits
from sandbox.launcher import cgroup_binds
from sandbox.limits import CLI_PROCESS_HEADROOM, MB, create_run_cgroup

OWNER = (61000, 61000)


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Path:
    settings.SANDBOX_MEMORY_MB, settings.SANDBOX_MAX_PROCESSES, settings.SANDBOX_CPUS = 512, 100, 1.5
    monkeypatch.setattr(limits, "CGROUP_ROOT", tmp_path)
    return tmp_path


@pytest.mark.skipif(os.geteuid() != 0, reason="hands files to another uid")
def test_v2_the_run_keeps_its_processes_and_its_tools_get_a_pids_child(fake_root: Path) -> None:
    (fake_root / "cgroup.controllers").write_text("cpu memory pids\n")
    (fake_root / "agent-platform").mkdir()
    (fake_root / "agent-platform" / "cgroup.subtree_control").write_text("memory pids cpu\n")
    run = fake_root / "agent-platform" / "run-1"
    run.mkdir()
    (run / "cpu.max").write_text("max 100000\n")  # the kernel makes it when the cpu controller is enabled

    # mkdir of the run's directory is the kernel's in real life: here it exists already with its files.
    original_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        original_mkdir(self, *args, **{**kwargs, "exist_ok": True})  # type: ignore[arg-type]
        (self / "cgroup.procs").touch()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "mkdir", mkdir)
        cgroup = create_run_cgroup("run-1", owner=OWNER)

    assert cgroup is not None and cgroup.version == 2 and cgroup.cpu_limited
    assert (run / "memory.max").read_text() == str(512 * MB)
    assert (run / "pids.max").read_text() == "100"
    assert (run / "cpu.max").read_text() == "150000 100000"
    # Only pids (threaded) below the run: it may then hold the CLI while its child holds the tools.
    assert (run / "cgroup.subtree_control").read_text() == "+pids"
    assert (run / "tools" / "pids.max").read_text() == str(100 - CLI_PROCESS_HEADROOM)
    # Delegation: the sandbox user writes the child's cgroup.procs and, on v2, the common ancestor's.
    assert (os.stat(run / "tools" / "cgroup.procs").st_uid, os.stat(run / "cgroup.procs").st_uid) == (61000, 61000)
    assert cgroup_binds(cgroup).split() == [f"ro:{run}:/run/cgroup/unified", f"rw:{run / 'tools'}:/run/cgroup/tools"]


@pytest.mark.skipif(os.geteuid() != 0, reason="hands files to another uid")
def test_v1_pids_has_the_tools_child_and_cpu_its_own_hierarchy(fake_root: Path) -> None:
    cpu_parent = fake_root / "cpu" / "agent-platform" / "run-2"
    original_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        original_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        (self / "cgroup.procs").touch()
        if self == cpu_parent:
            (self / "cpu.cfs_period_us").write_text("100000\n")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "mkdir", mkdir)
        cgroup = create_run_cgroup("run-2", owner=OWNER)

    pids = fake_root / "pids" / "agent-platform" / "run-2"
    assert cgroup is not None and cgroup.version == 1 and cgroup.cpu_limited
    assert (fake_root / "memory" / "agent-platform" / "run-2" / "memory.limit_in_bytes").read_text() == str(512 * MB)
    assert (pids / "pids.max").read_text() == "100"
    assert (pids / "tools" / "pids.max").read_text() == str(100 - CLI_PROCESS_HEADROOM)
    assert os.stat(pids / "tools" / "cgroup.procs").st_uid == 61000 and os.stat(pids / "cgroup.procs").st_uid == 0
    assert (cpu_parent / "cpu.cfs_quota_us").read_text() == "150000"
    assert set(cgroup.controllers) == {"memory", "pids", "cpu"}
    assert cgroup.procs_files == [str(path / "cgroup.procs") for path in cgroup.paths] and len(cgroup.paths) == 3
