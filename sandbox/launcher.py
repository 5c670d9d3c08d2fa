"""How a run's CLI is started: the one place that decides its sandbox, environment and limits."""

import contextlib
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import claude_agent_sdk
from django.conf import settings

from sandbox import seccomp
from sandbox.limits import RunCgroup, create_run_cgroup, rlimit_args, run_cgroups, tools_max_processes
from sandbox.report import REPORT_NAME, host_namespaces, unsandboxed_report

logger = logging.getLogger(__name__)

BUNDLED_CLI = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
BIN = Path(__file__).parent / "bin"
BUBBLEWRAP, UNSANDBOXED = "bubblewrap", "unsandboxed"
# Inside the sandbox the workspace is always /workspace. The SDK starts the CLI with this as its
# working directory (and derives the session store's project key from it), so it must exist on the
# host too: an empty placeholder that the sandbox mounts over.
SANDBOX_CWD = Path("/workspace")
# Where socat listens inside the sandbox, bridging to the run's gateway socket. Any port would do:
# each sandbox has its own network namespace with only `lo` and nothing else listening, so every run
# uses the same one without colliding, and the CLI's base URL is known before the sandbox starts.
# Above 1024 because the bridge runs as the sandbox's unprivileged uid, with no capabilities.
BRIDGE_PORT = 8765
# Where the run's egress proxy answers inside the sandbox (gateway.proxy), bridged the same way.
EGRESS_PORT = 8766
# Where the run's config dir (CLAUDE_CONFIG_DIR) is inside the sandbox, whatever its host path: the CLI names
# it to the model (the skills' folder, the memory folder), and the host path would say where the platform lives.
SANDBOX_CONFIG_DIR = "/home/agent/.claude"
# The sandbox's own files inside (the init, its config, the seccomp filters, the tools' shell prefix) and the
# run's cgroup directories, bound so that the init can read the limits in force and tools can join theirs.
SANDBOX_FILES = Path("/run/sandbox")
SANDBOX_CGROUPS = Path("/run/cgroup")
INIT, TOOLS_SHELL = "sandbox-init", "tools-shell"
UNSANDBOXED_WARNING = (
    "This run is NOT sandboxed: the agent's tools run as the worker's own user with its file system "
    "(SANDBOX_RUNNER=unsandboxed, development only)."
)


class SandboxUnavailable(Exception):
    """The configured sandbox cannot run here; the message says how to fix it."""


@dataclass
class RunPlace:
    """A run's private directory on the worker: the CLI's config, the gateway socket, a minimal /etc."""

    root: Path
    workspace: Path
    kind: str
    cgroup: RunCgroup | None = None

    @property
    def config_dir(self) -> Path:
        return self.root / "claude"

    @property
    def skills_dir(self) -> Path:
        """The run's skills, where the CLI finds them: mounted read-only over `<config dir>/skills` in the sandbox."""
        return self.root / "skills" if self.kind == BUBBLEWRAP else self.config_dir / "skills"

    @property
    def sandbox_dir(self) -> Path:
        """The sandbox's own files for this run (bound read-only at /run/sandbox inside)."""
        return self.root / "sandbox"

    @property
    def report_path(self) -> Path | None:
        """Where the in-sandbox init writes its report (`/run/gateway/sandbox.json` inside)."""
        return self.root / "gateway" / REPORT_NAME if self.kind == BUBBLEWRAP else None

    @property
    def gateway_socket(self) -> Path | None:
        return self.root / "gateway" / "gateway.sock" if self.kind == BUBBLEWRAP else None

    @property
    def egress_socket(self) -> Path | None:
        return self.root / "gateway" / "egress.sock" if self.kind == BUBBLEWRAP else None

    def remove(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
        for directory, _, _ in os.walk(self.root):  # read-only folders (the skills') cannot be emptied
            with contextlib.suppress(OSError):
                Path(directory).chmod(0o755)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class Launch:
    """What the SDK needs to start a run's CLI through the launcher."""

    cli_path: str
    env: dict[str, str]
    cwd: str
    sandbox: str
    warning: str = ""
    limits: dict[str, Any] = field(default_factory=dict)
    # The sandbox's report of itself: read from `report_path` once the init wrote it, or known beforehand
    # (the unsandboxed mode's).
    report_path: Path | None = None
    report: dict[str, Any] | None = None


def sandbox_kind() -> str:
    """The runner for new runs, or SandboxUnavailable when the configured one cannot run here."""
    if settings.SANDBOX_RUNNER == UNSANDBOXED:
        if not settings.DEBUG:
            raise SandboxUnavailable("The unsandboxed runner is refused with DEBUG off; install bubblewrap.")
        return UNSANDBOXED
    if not shutil.which(settings.SANDBOX_BWRAP) or not shutil.which("socat"):
        raise SandboxUnavailable(
            "bubblewrap (bwrap) and socat are required to run agents: install the bubblewrap and socat "
            "packages. For development only, DEBUG=1 with SANDBOX_RUNNER=unsandboxed runs without them."
        )
    return BUBBLEWRAP


def sandbox_ids() -> tuple[int, int]:
    """The host uid/gid that runs agents: a dedicated one when the worker is root, else the worker's own."""
    if os.geteuid() == 0:
        return settings.SANDBOX_UID, settings.SANDBOX_UID
    return os.geteuid(), os.getegid()


def check_reachable(path: Path, uid: int) -> None:
    """The sandbox user must be able to reach `path`: bubblewrap opens every mount source as that user."""
    for directory in [path, *path.parents]:
        info = directory.stat()
        if not (info.st_mode & 0o001 or (info.st_uid == uid and info.st_mode & 0o100)):
            raise SandboxUnavailable(
                f"The sandbox user (uid {uid}) cannot reach {path}: {directory} is not traversable. "
                "Set RUN_ROOT to a directory whose parents all allow others to traverse them (chmod o+x), "
                "e.g. /var/lib/agent-platform."
            )


def sandboxed_cli() -> Path:
    """The CLI binary where the sandbox user can reach it: linked (or copied) once into RUN_ROOT."""
    version = (BUNDLED_CLI.parent / "claude.version").read_text().split()[0]
    path = settings.RUN_ROOT / "bin" / f"claude-{version}"
    if not path.exists():
        path.parent.mkdir(mode=0o711, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}")
        try:
            os.link(BUNDLED_CLI, staging)
        except OSError:  # another file system
            shutil.copy2(BUNDLED_CLI, staging)
        staging.replace(path)
    return path


def prepare_place(run_id: str, workspace: Path) -> RunPlace:
    """Create the run's private directory, owned so that the sandbox user can use what it must."""
    kind = sandbox_kind()
    runs = settings.RUN_ROOT / "runs"
    runs.mkdir(mode=0o711, parents=True, exist_ok=True)
    place = RunPlace(runs / run_id, workspace, kind)
    if place.root.exists():
        # Left by a worker of this machine that died while it ran the run, which now goes on here (a run that
        # waited for a person when its worker died): whatever that worker left is no longer anyone's.
        place.cgroup = run_cgroups().get(run_id)
        place.remove()
        place.cgroup = None
    place.config_dir.mkdir(parents=True, mode=0o700)
    if kind == BUBBLEWRAP:
        uid, gid = sandbox_ids()
        check_reachable(place.root, uid)
        check_reachable(workspace, uid)
        if not SANDBOX_CWD.is_dir():
            try:
                SANDBOX_CWD.mkdir()
            except OSError as exc:
                raise SandboxUnavailable(f"Create an empty directory {SANDBOX_CWD} for the sandbox ({exc}).") from exc
        gateway_dir = place.root / "gateway"
        gateway_dir.mkdir(mode=0o700)
        etc = place.root / "etc"
        etc.mkdir()
        (etc / "passwd").write_text(f"agent:x:{uid}:{gid}:agent:/home/agent:/bin/bash\n")
        (etc / "group").write_text(f"agent:x:{gid}:\n")
        (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
        if os.geteuid() == 0:
            for path in (place.root, gateway_dir, place.config_dir, workspace):
                os.chown(path, uid, gid)
        place.cgroup = create_run_cgroup(run_id, owner=(uid, gid))
        write_sandbox_files(place)
    return place


def write_sandbox_files(place: RunPlace) -> None:
    """The init, its config and the seccomp filters, in the run's sandbox directory (root's, read-only inside)."""
    directory = place.sandbox_dir
    directory.mkdir(mode=0o755)
    seccomp.write_filters(directory)
    for name in (INIT, TOOLS_SHELL):
        shutil.copyfile(BIN / name, directory / name)
        (directory / name).chmod(0o755)
    cgroups: dict[str, str] = {}
    if place.cgroup is not None:
        cgroups = {name: str(SANDBOX_CGROUPS / name) for name in place.cgroup.controllers}
        if place.cgroup.tools is not None:
            cgroups["tools"] = str(SANDBOX_CGROUPS / "tools")
    # Lines of `key value…` (the init avoids importing json: see sandbox-init).
    lines = [
        f"report /run/gateway/{REPORT_NAME}",
        f"unix_socket_filter {SANDBOX_FILES / 'unix.bpf'}",
        f"host_uid {sandbox_ids()[0]}",
        *(f"namespace {name} {inode}" for name, inode in host_namespaces().items()),
        " ".join(["required", *settings.SANDBOX_REQUIRED_LAYERS]),
        *(f"cgroup {name} {path}" for name, path in cgroups.items()),
    ]
    (directory / "config").write_text("\n".join(lines) + "\n")
    (directory / "config").chmod(0o644)


def cgroup_binds(cgroup: RunCgroup | None) -> str:
    """The wrapper's cgroup mounts, `MODE:HOST:INSIDE` words: each controller's directory read-only (the init
    reads the limits), the tools' child read-write (each Bash command moves itself there)."""
    if cgroup is None:
        return ""
    binds = [f"ro:{path}:{SANDBOX_CGROUPS / name}" for name, path in cgroup.controllers.items()]
    if cgroup.tools is not None:
        binds.append(f"rw:{cgroup.tools}:{SANDBOX_CGROUPS / 'tools'}")
    return " ".join(binds)


def agent_environment(
    *,
    model_id: str,
    config_dir: Path,
    gateway: Mapping[str, str],
    egress: Mapping[str, str] | None = None,
    small_model_id: str | None = None,
    subagent_model_id: str | None = None,
) -> dict[str, str]:
    """The CLI's whole environment: nothing of the worker's, and no credential but the run's token.

    `gateway` is what sends the CLI's model calls to the run's gateway (`ModelGateway.cli_environment`), `egress`
    what sends its and its tools' web traffic to the run's egress proxy (`EgressProxy.environment`).
    Every model the CLI chooses itself must be one the run was given, or the gateway refuses the call:
    `model_id` is the run's, also for the `sonnet` and `opus` aliases; `small_model_id` the CLI's
    "small fast" model of its side calls (titles, summaries) and the `haiku` alias; `subagent_model_id`
    that of subagents whose definition names no model. Both are the run's model unless told otherwise.
    """
    small_model_id = small_model_id or model_id
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/home/agent",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "CLAUDE_CONFIG_DIR": str(config_dir),
        "ANTHROPIC_MODEL": model_id,
        # The CLI's aliases resolve to catalog models, not to its own table of Anthropic's models.
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model_id,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model_id,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": small_model_id,
        # Read before the haiku alias for side calls (CLI 2.1.327), though no longer documented.
        "ANTHROPIC_SMALL_FAST_MODEL": small_model_id,
        "CLAUDE_CODE_SUBAGENT_MODEL": subagent_model_id or model_id,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # The CLI's own skills (code review, data viz, …) are not the tenant's: only the run's are listed.
        "CLAUDE_CODE_DISABLE_BUNDLED_SKILLS": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        **(egress or {}),
        **gateway,
    }


def gateway_base_url(place: RunPlace, tcp_url: str) -> str:
    """Where the CLI finds the gateway: the socket's bridge inside the sandbox, or loopback TCP."""
    return f"http://127.0.0.1:{BRIDGE_PORT}" if place.kind == BUBBLEWRAP else tcp_url


def egress_base_url(place: RunPlace, tcp_url: str) -> str:
    """Where tools find the egress proxy: its bridge inside the sandbox, or loopback TCP."""
    return f"http://127.0.0.1:{EGRESS_PORT}" if place.kind == BUBBLEWRAP else tcp_url


# Where the sandbox finds the CA bundle it trusts (the egress proxy's CA among the system's roots).
SANDBOX_CA_BUNDLE = "/opt/egress/ca-bundle.pem"


def prepare_launch(place: RunPlace, env: dict[str, str], ca_bundle: Path | None = None) -> Launch:
    """The launch of one run's CLI with exactly `env` as its environment; `ca_bundle` is the host file the sandbox
    sees at SANDBOX_CA_BUNDLE."""
    if place.kind == UNSANDBOXED:
        logger.warning("Run in %s is not sandboxed (SANDBOX_RUNNER=unsandboxed)", place.root.name)
        if os.geteuid() == 0:
            # As root the CLI refuses some modes (bypassPermissions) unless told it is sandboxed; it is not.
            env = {**env, "IS_SANDBOX": "1", "HOME": str(place.root)}
        else:
            env = {**env, "HOME": str(place.root)}
        return Launch(
            cli_path=str(BIN / "agent-launch"),
            env={**env, "AGENT_ENV_NAMES": " ".join(env), "AGENT_CLI": str(BUNDLED_CLI)},
            cwd=str(place.workspace),
            sandbox=UNSANDBOXED,
            warning=UNSANDBOXED_WARNING,
            limits={"cgroup": None},
            report=unsandboxed_report(),
        )
    uid, gid = sandbox_ids()
    cgroup = place.cgroup
    limits = {
        "cgroup": f"v{cgroup.version}" if cgroup else None,
        "memory_mb": settings.SANDBOX_MEMORY_MB if cgroup else None,
        "max_processes": settings.SANDBOX_MAX_PROCESSES if cgroup else None,
        "tools_max_processes": tools_max_processes() if cgroup and cgroup.tools else None,
        "cpus": settings.SANDBOX_CPUS if cgroup and cgroup.cpu_limited else None,
        "cpu_seconds": settings.SANDBOX_CPU_SECONDS,
        "file_mb": settings.SANDBOX_FILE_MB,
        "tmp_mb": settings.SANDBOX_TMP_MB,
        "workspace_mb": settings.SANDBOX_WORKSPACE_MB,
    }
    sandbox_env = {
        "AGENT_ENV_NAMES": " ".join(env),
        "AGENT_CLI": str(sandboxed_cli()),
        "SANDBOX_UID": str(uid),
        "SANDBOX_GID": str(gid),
        "SANDBOX_WORKSPACE": str(place.workspace),
        "SANDBOX_GATEWAY_DIR": str(place.root / "gateway"),
        "SANDBOX_ETC": str(place.root / "etc"),
        "SANDBOX_SKILLS": str(place.skills_dir),
        "SANDBOX_TMP_MB": str(settings.SANDBOX_TMP_MB),
        "SANDBOX_RLIMITS": rlimit_args(),
        "SANDBOX_BRIDGE_PORT": str(BRIDGE_PORT),
        "SANDBOX_EGRESS_PORT": str(EGRESS_PORT),
        "SANDBOX_BWRAP": shutil.which(settings.SANDBOX_BWRAP) or settings.SANDBOX_BWRAP,
        "SANDBOX_CGROUP_PROCS": " ".join(cgroup.procs_files if cgroup else []),
        "SANDBOX_CGROUP_BINDS": cgroup_binds(cgroup),
        "SANDBOX_DIR": str(place.sandbox_dir),
        "SANDBOX_CONFIG_DIR": SANDBOX_CONFIG_DIR,
        "SANDBOX_CA_BUNDLE": str(ca_bundle or ""),
    }
    if cgroup is not None and cgroup.tools is not None:
        # Every Bash command the CLI runs starts as `tools-shell 'COMMAND'` (CLI 2.1.327: the prefix, quoted,
        # then the whole command line quoted), which moves itself into the tools' cgroup and runs it.
        env = {**env, "CLAUDE_CODE_SHELL_PREFIX": str(SANDBOX_FILES / TOOLS_SHELL)}
        sandbox_env["AGENT_ENV_NAMES"] = " ".join(env)
    return Launch(
        cli_path=str(BIN / "agent-sandbox"),
        env={**env, **sandbox_env},
        cwd=str(SANDBOX_CWD),
        sandbox=BUBBLEWRAP,
        limits=limits,
        report_path=place.report_path,
    )
