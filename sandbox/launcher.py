"""How a run's CLI is started: one place, so that the sandbox can take it over."""

import os
from dataclasses import dataclass
from pathlib import Path

import claude_agent_sdk

BUNDLED_CLI = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
LAUNCH_SCRIPT = Path(__file__).parent / "bin" / "agent-launch"
UNSANDBOXED_WARNING = (
    "This run is NOT sandboxed: the agent's tools run with the worker's own user and file system (development only)."
)


@dataclass(frozen=True)
class Launch:
    """What the SDK needs to start a run's CLI through the launcher."""

    cli_path: str
    env: dict[str, str]
    sandbox: str
    warning: str = ""


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
    return Launch(
        cli_path=str(LAUNCH_SCRIPT),
        env={**env, "AGENT_ENV_NAMES": " ".join(env), "AGENT_CLI": str(BUNDLED_CLI)},
        sandbox="none",
        warning=UNSANDBOXED_WARNING,
    )
