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


# Processes kept for the CLI beyond its tools' limit: a fork bomb in the Bash tool fills the tools' child
# cgroup, and the CLI can still start the threads it needs to answer (without them it aborts, exit 134).
CLI_PROCESS_HEADROOM = 32
TOOLS = "tools"


@dataclass
class RunCgroup:
    """The cgroup directories of one run (one per v1 controller, or one v2 directory), each with a `tools`
    child for the agent's Bash commands, which the sandbox user may move its own processes into."""

    paths: list[Path] = field(default_factory=list)
    version: int = 0
    # Inside the sandbox: where each directory is bound ("memory", "pids", "cpu" for v1, "unified" for v2).
    controllers: dict[str, Path] = field(default_factory=dict)
    tools: Path | None = None
    cpu_limited: bool = False

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.paths]

    def kill_tools(self) -> None:
        """Kill the agent's commands still running (its CLI, outside the tools' child, lives on)."""
        if self.tools is None:
            return
        for pid in _pids(self.tools):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Kill whatever is left in the run's cgroup and delete it (its tools' child first)."""
        for path in self.paths:
            _remove_tree(path)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    with contextlib.suppress(OSError):
        for child in path.iterdir():
            if child.is_dir():
                _remove_tree(child)
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


def create_run_cgroup(name: str, owner: tuple[int, int] | None = None) -> RunCgroup | None:
    """A cgroup capping the run's memory, process count and CPU, or None where cgroups aren't writable.

    `owner` (the sandbox's uid and gid) gets what cgroup delegation asks of a process that moves itself
    into the `tools` child: write access to that child's `cgroup.procs` (v1 and v2) and, on v2, to the
    run's own, the common ancestor of where the process is and where it goes.
    """
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
    if owner is not None and cgroup.tools is not None:
        try:
            procs = [cgroup.tools / "cgroup.procs"]
            if cgroup.version == 2:
                procs.append(cgroup.paths[0] / "cgroup.procs")
            for path in procs:
                os.chown(path, *owner)
        except OSError as exc:
            logger.info("Run %s: its tools' cgroup cannot be handed to the sandbox user (%s)", name, exc)
            _remove_tree(cgroup.tools)
            cgroup.tools = None
    return cgroup


def tools_max_processes() -> int:
    return max(1, settings.SANDBOX_MAX_PROCESSES - CLI_PROCESS_HEADROOM)


def cpu_quota(period_us: int) -> int | None:
    """The CPU time per period that SANDBOX_CPUS allows, or None for no limit."""
    return round(settings.SANDBOX_CPUS * period_us) if settings.SANDBOX_CPUS > 0 else None


def _create_v2(cgroup: RunCgroup, name: str) -> None:
    parent = CGROUP_ROOT / PARENT
    if not parent.exists():
        parent.mkdir()
        (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory +pids")
        (parent / "cgroup.subtree_control").write_text("+memory +pids")
    if settings.SANDBOX_CPUS > 0 and "cpu" not in (parent / "cgroup.subtree_control").read_text().split():
        with contextlib.suppress(OSError):  # a host may not delegate the cpu controller: then the run has no CPU limit
            (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu")
            (parent / "cgroup.subtree_control").write_text("+cpu")
    path = parent / name
    path.mkdir()
    cgroup.paths.append(path)
    cgroup.version = 2
    cgroup.controllers["unified"] = path
    (path / "memory.max").write_text(str(settings.SANDBOX_MEMORY_MB * MB))
    (path / "memory.swap.max").write_text("0")
    (path / "pids.max").write_text(str(settings.SANDBOX_MAX_PROCESSES))
    quota = cpu_quota(100_000)
    if quota is not None and (path / "cpu.max").exists():
        (path / "cpu.max").write_text(f"{quota} 100000")
        cgroup.cpu_limited = True
    # Only pids, a "threaded" controller, is handed down: a cgroup whose children have domain controllers
    # (memory) may hold no process itself, and the CLI stays in the run's cgroup, its tools below it. The
    # sandbox's cgroup namespace is rooted at the run's cgroup, so the child is within its reach.
    (path / "cgroup.subtree_control").write_text("+pids")
    tools = path / TOOLS
    tools.mkdir()
    (tools / "pids.max").write_text(str(tools_max_processes()))
    cgroup.tools = tools


def _create_v1(cgroup: RunCgroup, name: str) -> None:
    cgroup.version = 1
    for controller in ("memory", "pids"):
        path = CGROUP_ROOT / controller / PARENT / name
        path.mkdir(parents=True)
        cgroup.paths.append(path)
        cgroup.controllers[controller] = path
    memory, pids = cgroup.paths
    (memory / "memory.limit_in_bytes").write_text(str(settings.SANDBOX_MEMORY_MB * MB))
    with contextlib.suppress(OSError):  # absent when the kernel does no swap accounting
        (memory / "memory.memsw.limit_in_bytes").write_text(str(settings.SANDBOX_MEMORY_MB * MB))
    (pids / "pids.max").write_text(str(settings.SANDBOX_MAX_PROCESSES))
    tools = pids / TOOLS
    tools.mkdir()
    (tools / "pids.max").write_text(str(tools_max_processes()))
    cgroup.tools = tools
    if settings.SANDBOX_CPUS > 0:
        _create_v1_cpu(cgroup, name)


def _create_v1_cpu(cgroup: RunCgroup, name: str) -> None:
    """The v1 cpu controller's cgroup, where the host has one: without it the run has no CPU limit."""
    path = CGROUP_ROOT / "cpu" / PARENT / name
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        logger.info("No CPU limit for run %s (%s)", name, exc)
        return
    cgroup.paths.append(path)
    try:
        period = int((path / "cpu.cfs_period_us").read_text())
        (path / "cpu.cfs_quota_us").write_text(str(cpu_quota(period)))
    except OSError as exc:
        logger.info("No CPU limit for run %s (%s)", name, exc)
        return
    cgroup.controllers["cpu"] = path
    cgroup.cpu_limited = True


def run_cgroups() -> dict[str, RunCgroup]:
    """Every run cgroup on this machine, by run id."""
    found: dict[str, RunCgroup] = {}
    for parent in (
        CGROUP_ROOT / PARENT,
        CGROUP_ROOT / "memory" / PARENT,
        CGROUP_ROOT / "pids" / PARENT,
        CGROUP_ROOT / "cpu" / PARENT,
    ):
        with contextlib.suppress(OSError):
            for path in parent.iterdir():
                if path.is_dir():
                    found.setdefault(path.name, RunCgroup()).paths.append(path)
    return found
