"""The Agent SDK options of a run: its agent profile version, mapped option by option."""

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from claude_agent_sdk import AgentDefinition, ClaudeAgentOptions
from claude_agent_sdk.types import (
    HookEvent,
    HookMatcher,
    PermissionResult,
    SystemPromptPreset,
    ThinkingConfig,
    ToolPermissionContext,
)

from agents.models import AgentVersion
from agents.rules import PLATFORM_DISALLOWED
from agents.services import RunAgent
from conversations.models import Run
from runs.gate import SUBAGENT_TOOLS
from runs.session_store import DatabaseSessionStore
from runs.steering import steers
from skills.services import RunSkills

if TYPE_CHECKING:
    from runs.prepare import RunSetup
from workspaces.services import WORKSPACE_PROMPT

logger = logging.getLogger(__name__)

# Who is calling, on every request the CLI makes (the SDK's `client_app`: its User-Agent).
CLIENT_APP = "agent-platform/1"


class ToolPermissions(Protocol):
    """Who decides the CLI's tool calls: the run's gate (`runs.gate.RunGate`), through its session
    (`runs.sessions.AgentSession`), which hands each call to the gate of the run it serves."""

    def hooks(self) -> dict[HookEvent, list[HookMatcher]]: ...

    async def can_use_tool(
        self, name: str, tool_input: dict[str, Any], context: ToolPermissionContext
    ) -> PermissionResult: ...


def agent_options(
    run: Run,
    setup: "RunSetup",
    gate: ToolPermissions,
    *,
    stderr: Callable[[str], None],
    settled_tool: str | None = None,
) -> ClaudeAgentOptions:
    """The CLI behind the sandbox launcher, in the run's workspace, as its agent profile version says: its
    instructions, model, tools and their policy, subagents and structured output; with exactly the run's
    skills and MCP servers. `settled_tool`: the tool of the call a resumed run was suspended on."""
    launch, skills, agent = setup.launch, setup.skills, setup.agent
    version = agent.version
    return ClaudeAgentOptions(
        cli_path=launch.cli_path,
        env=launch.env,
        cwd=launch.cwd,
        model=run.model.provider_model_id,
        fallback_model=agent.fallback_model.provider_model_id if agent.fallback_model else None,
        system_prompt=system_prompt(version, skills_prompt(skills), preferred_skills_prompt(skills.preferred)),
        effort=version.effort or None,  # type: ignore[arg-type]  # one of the SDK's levels (AgentVersion.Effort)
        thinking=thinking(version),
        max_turns=version.max_turns,
        agents=subagents(agent) or None,
        # A subagent's text reaches the stream only when asked for; its calls stream no events either, so its
        # messages are all there is to nest its answer under its call and to place its calls' usage.
        forward_subagent_text=True,
        # Whole tools a profile disallows are not offered at all (the policy hook refuses them too, with reasons).
        disallowed_tools=[*PLATFORM_DISALLOWED, *bare_tool_names(version.disallowed_tools)],
        output_format={"type": "json_schema", "schema": version.output_schema} if version.output_schema else None,
        # The run's gate decides every call: its hook answers allow, deny or defer, and `can_use_tool` answers
        # what the CLI still asks (in `default` mode only: under bypassPermissions it is never asked, and the
        # CLI offers no AskUserQuestion).
        permission_mode="default",
        can_use_tool=gate.can_use_tool,
        # A resumed run's suspended call is settled at connect by the hook or by `can_use_tool`, by a race; a
        # tool that needs no permission (Read in the workspace) would then run unasked, a denial ignored. An
        # `ask` rule for it makes the CLI ask `can_use_tool` whenever the hook is not the one asked.
        # WebFetch goes out through the run's egress proxy like any tool; its preflight would first ask Anthropic
        # whether the domain is safe (telling it every domain the agent visits), which the proxy refuses anyway.
        settings=json.dumps(
            {"skipWebFetchPreflight": True, **({"permissions": {"ask": [settled_tool]}} if settled_tool else {})}
        ),
        include_partial_messages=True,
        resume=setup.resume,
        mcp_servers=setup.mcp_config,
        hooks=gate.hooks(),
        # End users' text is delivered verbatim, message by message (`runs.executor.user_message` marks each
        # `client_composed`: no `@path` expansion, none of the CLI's own slash commands). The session-wide
        # `verbatim_prompts=True` would do the same for every message but leaves no way to dispatch the
        # tenant's slash-command skills, which the API has already checked.
        verbatim_prompts=False,
        client_app=CLIENT_APP,
        # The transcript lives in the database, so the next message resumes on any worker;
        # the CLI's config directory is per run and thrown away.
        # (mypy takes the SDK protocol's optional methods, which raise NotImplementedError, for abstract ones.)
        session_store=DatabaseSessionStore(run.conversation_id),  # type: ignore[abstract]
        # "user" settings are the run's own config dir, where the sandbox mounts the run's skills;
        # the CLI's built-in skills stay out of the model's listing.
        setting_sources=["user"],
        skills=[version.skill.name for version in skills.versions],
        stderr=stderr,
        # The CLI echoes each user message as it takes it in: how a run steered mid-turn knows it is over (runs.steering).
        extra_args={"replay-user-messages": None} if steers(version) else {},
    )


def system_prompt(version: AgentVersion, *more: str) -> SystemPromptPreset:
    """Claude Code's prompt with the workspace's rules and the agent's instructions appended.

    The SDK's `snapshot` decides whether a resumed session keeps the prompt it first recorded: off (the
    default `next_turn`), an edit of the instructions reaches every conversation at its next turn."""
    parts = (WORKSPACE_PROMPT, version.instructions, *more)
    return {
        "type": "preset",
        "preset": "claude_code",
        "append": "\n\n".join(part for part in parts if part),
        "snapshot": version.prompt_scope == AgentVersion.PromptScope.NEW_CONVERSATIONS,
    }


def bare_tool_names(patterns: list[str]) -> list[str]:
    """The whole tools among patterns (not `Bash(rm *)`, not MCP tools), as the CLI names them."""
    names = {pattern for pattern in patterns if "(" not in pattern and not pattern.startswith("mcp__")}
    return sorted(names | SUBAGENT_TOOLS if names & SUBAGENT_TOOLS else names)


def thinking(version: AgentVersion) -> ThinkingConfig | None:
    if version.thinking_budget is None:
        return None
    if version.thinking_budget == 0:
        return {"type": "disabled"}
    return {"type": "enabled", "budget_tokens": version.thinking_budget}


def subagents(agent: RunAgent) -> dict[str, AgentDefinition]:
    definitions = {}
    for subagent in agent.version.subagents:
        model = agent.subagent_models.get(subagent["name"])
        definitions[subagent["name"]] = AgentDefinition(
            description=subagent["description"],
            prompt=subagent["prompt"],
            tools=subagent.get("tools"),
            # A subagent naming no model runs on the run's.
            model=model.provider_model_id if model else "inherit",
            # In the foreground: a background subagent outlives its run's ResultMessage, and its events its run.
            background=False,
        )
    return definitions


def skills_prompt(skills: RunSkills) -> str:
    """The run's skills, named in the system prompt: a verbatim message skips the CLI's listing of them, which
    would otherwise come with the message (it arrives only after the turn's first tool call)."""
    if not skills.versions:
        return ""
    listed = "\n".join(f"- `{version.skill.name}`: {version.description}" for version in skills.versions)
    return f"Skills you can load with the Skill tool:\n{listed}"


def preferred_skills_prompt(names: list[str]) -> str:
    if not names:
        return ""
    listed = ", ".join(f"`{name}`" for name in names)
    return (
        f"For this message the user asks you to use these skills first, with the Skill tool, "
        f"wherever they apply: {listed}."
    )
