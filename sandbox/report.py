"""The sandbox's report of itself: what the in-sandbox init (sandbox/bin/sandbox-init) found in force.

The init writes it to the run's gateway directory (`/run/gateway/sandbox.json` inside) before the CLI
starts; the worker waits for it and puts it in `run.started` as `sandbox_report`. A run without a
layer the operator requires (SANDBOX_REQUIRED_LAYERS) is refused: the init exits before the CLI, and
the run fails `sandbox_unavailable` naming the layers.
"""

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings

NAMESPACES = {
    "user": "user",
    "mount": "mnt",
    "pid": "pid",
    "net": "net",
    "ipc": "ipc",
    "uts": "uts",
    "cgroup": "cgroup",
}
REPORT_NAME = "sandbox.json"
# Long enough for a loaded machine to start bubblewrap and Python; the CLI's own start takes longer.
REPORT_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.003


def host_namespaces() -> dict[str, int]:
    """The worker's own namespaces (inode numbers), which a sandboxed process must not share."""
    found = {}
    for name in NAMESPACES.values():
        with contextlib.suppress(OSError):
            found[name] = os.stat(f"/proc/self/ns/{name}").st_ino
    return found


def unsandboxed_report() -> dict[str, Any]:
    """The report of a run in the development mode: no layer at all, said as plainly as a sandbox's."""
    return {
        "mode": "unsandboxed",
        "layers": dict.fromkeys(settings.SANDBOX_LAYERS, False),
        "uid": os.getuid(),
        "uid_map": [],
        "host_uid": os.getuid(),
        "host_root_unmapped": os.getuid() != 0,
        "capabilities": {},
        "seccomp": {"mode": 0, "filters": 0, "unix_sockets": True},
        "limits": {"memory_bytes": None, "max_processes": None, "cpus": None, "tools_max_processes": None},
        "network_interfaces": None,  # the worker's own: all of them
        "egress": "unrestricted",
        "required_layers": [],
        "missing_layers": [],
    }


def read_report(path: Path) -> dict[str, Any] | None:
    """The report at `path`, or None when it is not there (yet) or unreadable."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


async def wait_for_report(path: Path, starting: "asyncio.Task[Any]") -> dict[str, Any] | None:
    """The report once the init has written it, or None if `starting` (the CLI's connect) ended first
    without one or it took too long: the init then never ran, which the caller treats as a refusal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPORT_TIMEOUT_SECONDS
    while loop.time() < deadline:
        if (report := read_report(path)) is not None:
            return report
        if starting.done():
            return read_report(path)
        await asyncio.sleep(POLL_SECONDS)
    return None


def missing_layers_message(report: dict[str, Any]) -> str:
    missing = ", ".join(report.get("missing_layers", []))
    return (
        f"The sandbox on this worker lacks required layer(s): {missing}. The agent was not started. The operator "
        "can give the host what it lacks (see the run's sandbox report) or remove the layer from "
        "SANDBOX_REQUIRED_LAYERS."
    )
