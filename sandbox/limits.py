"""Per-run resource limits: a cgroup for memory and processes, rlimits for CPU time and file size.

A fork bomb or a memory hog inside a run's Bash tool must end that tool or that run, never the
worker or the host. Processes and memory need a cgroup (rlimits cannot cap them per run: the CLI
itself reserves a huge address space, and RLIMIT_NPROC counts every process of a uid); the cgroup
is created when the host lets the worker write one (cgroup v2, or v1's memory and pids
controllers), and `run.started` says which limits apply.
"""

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "agent-platform"
MB = 1024 * 1024


def directory_bytes(path: Path) -> int:
    """Disk space used by a directory tree (allocated blocks, so sparse files count as stored)."""
    total = 0
    stack = [path]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def rlimit_args() -> str:
    """prlimit(1) options for a run: CPU seconds and largest file, per process."""
    return f"--cpu={settings.SANDBOX_CPU_SECONDS} --fsize={settings.SANDBOX_FILE_MB * MB} --core=0"


@dataclass
class RunCgroup:
    """The cgroup directories of one run (one per v1 controller, or one v2 directory)."""

    paths: list[Path] = field(default_factory=list)
    version: int = 0

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.paths]

    def remove(self) -> None:
        """Kill whatever is left in the run's cgroup and delete it."""
        for path in self.paths:
            if not path.exists():
                continue
            if (path / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (path / "cgroup.kill").write_text("1")
            else:
                for pid in _pids(path):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)  # the killed processes are still exiting
            else:
                logger.warning("Could not remove cgroup %s", path)


def _pids(path: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    return []


def create_run_cgroup(name: str) -> RunCgroup | None:
    """A cgroup capping the run's memory and process count, or None where cgroups aren't writable."""
    cgroup = RunCgroup()
    try:
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            _create_v2(cgroup, name)
        else:
            _create_v1(cgroup, name)
    except OSError as exc:
        logger.info("No cgroup for run %s (%s): memory and process limits are not enforced", name, exc)
        cgroup.remove()
        return None
    return cgroup


def _create_v2(cgroup: RunCgroup, name: str) -> None:
    parent = CGROUP_ROOT / PARENT
    if not parent.exists():
        parent.mkdir()
        (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory +pids")
        (parent / "cgroup.subtree_control").write_text("+memory +pids")
    path = parent / name
    path.mkdir()
    cgroup.paths.append(path)
    cgroup.version = 2
    (path / "memory.max").write_text(str(settings.SANDBOX_MEMORY_MB * MB))
    (path / "memory.swap.max").write_text("0")
    (path / "pids.max").write_text(str(settings.SANDBOX_MAX_PROCESSES))


def _create_v1(cgroup: RunCgroup, name: str) -> None:
    cgroup.version = 1
    for controller in ("memory", "pids"):
        path = CGROUP_ROOT / controller / PARENT / name
        path.mkdir(parents=True)
        cgroup.paths.append(path)
    memory, pids = cgroup.paths
    (memory / "memory.limit_in_bytes").write_text(str(settings.SANDBOX_MEMORY_MB * MB))
    with contextlib.suppress(OSError):  # absent when the kernel does no swap accounting
        (memory / "memory.memsw.limit_in_bytes").write_text(str(settings.SANDBOX_MEMORY_MB * MB))
    (pids / "pids.max").write_text(str(settings.SANDBOX_MAX_PROCESSES))


def run_cgroups() -> dict[str, RunCgroup]:
    """Every run cgroup on this machine, by run id."""
    found: dict[str, RunCgroup] = {}
    for parent in (CGROUP_ROOT / PARENT, CGROUP_ROOT / "memory" / PARENT, CGROUP_ROOT / "pids" / PARENT):
        with contextlib.suppress(OSError):
            for path in parent.iterdir():
                if path.is_dir():
                    found.setdefault(path.name, RunCgroup()).paths.append(path)
    return found
