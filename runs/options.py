"""The Agent SDK options of a run."""

from collections.abc import Callable

from claude_agent_sdk import ClaudeAgentOptions

from conversations.models import Run
from runs.session_store import DatabaseSessionStore
from sandbox.launcher import Launch
from workspaces.services import WORKSPACE_PROMPT


def agent_options(run: Run, launch: Launch, *, resume: str | None, stderr: Callable[[str], None]) -> ClaudeAgentOptions:
    """The CLI behind the sandbox launcher, in the run's workspace, on the run's model, with the tenant's prompt."""
    system_prompt = "\n\n".join(part for part in (WORKSPACE_PROMPT, run.conversation.tenant.system_prompt) if part)
    return ClaudeAgentOptions(
        cli_path=launch.cli_path,
        env=launch.env,
        cwd=launch.cwd,
        model=run.model.provider_model_id,
        system_prompt={"type": "preset", "preset": "claude_code", "append": system_prompt},
        permission_mode="bypassPermissions",
        include_partial_messages=True,
        resume=resume,
        # The transcript lives in the database, so the next message resumes on any worker;
        # the CLI's config directory is per run and thrown away.
        # (mypy takes the SDK protocol's optional methods, which raise NotImplementedError, for abstract ones.)
        session_store=DatabaseSessionStore(run.conversation_id),  # type: ignore[abstract]
        setting_sources=[],
        stderr=stderr,
    )
