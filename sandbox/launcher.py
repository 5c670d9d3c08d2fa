"""How a run's CLI is started: one place, so that the sandbox can take it over."""

import json
import logging
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import claude_agent_sdk
from django.conf import settings

logger = logging.getLogger(__name__)

BUNDLED_CLI = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
LAUNCH_SCRIPT = Path(__file__).parent / "bin" / "agent_launch.py"
UNSANDBOXED_WARNING = (
    "This run is NOT sandboxed: the agent's tools run with the worker's own user and file system "
    "(development only)."
)


@dataclass(frozen=True)
class Launch:
    """What the SDK needs to start a run's CLI through the launcher."""

    cli_path: str
    env: dict[str, str]
    sandbox: str
    warning: str = ""


def launcher_path() -> Path:
    """An executable wrapper around the launch script, written once per RUN_ROOT."""
    path = settings.RUN_ROOT / "bin" / "agent-launch"
    script = f'#!/bin/sh\nexec "{sys.executable}" -I -S "{LAUNCH_SCRIPT}" "$@"\n'
    if not path.exists() or path.read_text() != script:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(script)
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        tmp.replace(path)
    return path


def agent_environment(*, base_url: str, token: str, model_id: str, config_dir: Path, home: Path) -> dict[str, str]:
    """The CLI's whole environment: nothing of the worker's, and no credential but the run's token."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "CLAUDE_CONFIG_DIR": str(config_dir),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": token,
        "ANTHROPIC_MODEL": model_id,
        # Side calls (titles, summaries, subagents) go to the conversation's model, through the gateway.
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model_id,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model_id,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model_id,
        "CLAUDE_CODE_SUBAGENT_MODEL": model_id,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    if os.geteuid() == 0:
        # Unsandboxed, the CLI runs as the worker's user; as root it refuses bypassPermissions
        # unless told it is sandboxed. The next issue runs it as an unprivileged uid instead.
        env["IS_SANDBOX"] = "1"
    return env


def prepare_launch(env: dict[str, str]) -> Launch:
    """The launch for one run's CLI with exactly `env` as its environment."""
    spec = {"cli": str(BUNDLED_CLI), "env": env}
    return Launch(
        cli_path=str(launcher_path()),
        env={"AGENT_LAUNCH_SPEC": json.dumps(spec)},
        sandbox="none",
        warning=UNSANDBOXED_WARNING,
    )
