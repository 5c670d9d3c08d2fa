"""The Agent SDK options of a run."""

from collections.abc import Callable
from typing import TYPE_CHECKING

from claude_agent_sdk import ClaudeAgentOptions, HookMatcher
from claude_agent_sdk.types import HookContext, HookEvent, HookInput, SyncHookJSONOutput

from conversations.models import Run
from runs.session_store import DatabaseSessionStore

if TYPE_CHECKING:
    from runs.prepare import RunSetup
from workspaces.services import WORKSPACE_PROMPT


def agent_options(run: Run, setup: "RunSetup", *, stderr: Callable[[str], None]) -> ClaudeAgentOptions:
    """The CLI behind the sandbox launcher, in the run's workspace, on the run's model, with the tenant's
    prompt, and with exactly the run's skills and MCP servers."""
    launch, skills = setup.launch, setup.skills
    parts = (WORKSPACE_PROMPT, run.conversation.tenant.system_prompt, preferred_skills_prompt(skills.preferred))
    system_prompt = "\n\n".join(part for part in parts if part)
    return ClaudeAgentOptions(
        cli_path=launch.cli_path,
        env=launch.env,
        cwd=launch.cwd,
        model=run.model.provider_model_id,
        system_prompt={"type": "preset", "preset": "claude_code", "append": system_prompt},
        permission_mode="bypassPermissions",
        include_partial_messages=True,
        resume=setup.resume,
        mcp_servers=setup.mcp_config,
        hooks=allowed_tools_hook({server.name: list(server.allowed_tools) for server in setup.mcp.servers}),
        # The transcript lives in the database, so the next message resumes on any worker;
        # the CLI's config directory is per run and thrown away.
        # (mypy takes the SDK protocol's optional methods, which raise NotImplementedError, for abstract ones.)
        session_store=DatabaseSessionStore(run.conversation_id),  # type: ignore[abstract]
        # "user" settings are the run's own config dir, where the sandbox mounts the run's skills;
        # the CLI's built-in skills stay out of the model's listing.
        setting_sources=["user"],
        skills=[version.skill.name for version in skills.versions],
        stderr=stderr,
    )


def allowed_tools_hook(allowed: dict[str, list[str]]) -> dict[HookEvent, list[HookMatcher]]:
    """Refuse a call of an MCP tool its server does not allow (however the server is served)."""

    async def check(hook_input: HookInput, tool_use_id: str | None, context: HookContext) -> SyncHookJSONOutput:
        name = str(hook_input.get("tool_name", ""))
        _, server, tool = [*name.split("__", 2), "", ""][:3]
        tools = allowed.get(server)
        if not tools or tool in tools:
            return {}
        reason = f"MCP server {server!r} allows only these tools: {', '.join(tools)}."
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }
        }

    return {"PreToolUse": [HookMatcher(matcher="mcp__.*", hooks=[check])]}


def preferred_skills_prompt(names: list[str]) -> str:
    if not names:
        return ""
    listed = ", ".join(f"`{name}`" for name in names)
    return (
        f"For this message the user asks you to use these skills first, with the Skill tool, "
        f"wherever they apply: {listed}."
    )
