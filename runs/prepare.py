"""Everything a run needs before its CLI starts, one call per app that provides it.

A coming feature adds one call here, and a field to RunSetup where the options need it:

- agents: `run_agent(run)` (the executor's first call) gives the profile version the run records (instructions, tools and their policy,
  models, subagents, structured output), which `runs.options.agent_options` maps to SDK options; its
  skills and MCP servers are the defaults the conversation and message narrow;
- workspaces: `RunWorkspace.sync_in()` fills /workspace from storage before the launch (here); the
  executor calls `sync_out()` every WORKSPACE_SYNC_SECONDS and at every ending;
- skills: `run_skills(…)` chooses them, `place_skills(…)` links them from the worker's cache into the
  place, and the sandbox mounts them read-only where the CLI finds them;
- MCP servers: `mcp_servers.serving` chooses them and fills in their secrets; the gateway relays the http/sse
  ones, and `runs.options.agent_options` passes the CLI its configuration (`RunSetup.mcp`);
- approvals: `can_use_tool_for(run, …)`, likewise;
- egress: `agent.egress_policy()`, where the run's sandbox may connect (the tenant's allow-list narrowed by the
  profile's, secret headers revealed), enforced by the run's `gateway.proxy.EgressProxy`;
- budgets: nothing here; the gateway reserves each model call's worst case first (`usage.budgets`);
- titles: `title_model(run)`, the model a conversation's first run names it with (`runs.titles`), beside the
  agent's models.
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from asgiref.sync import sync_to_async

from agents.services import RunAgent
from conversations.events import EventItem, EventType
from conversations.models import Conversation, Run, SessionEntry
from gateway.allowlist import EgressPolicy
from gateway.calls import Refusal, models_by_id
from gateway.proxy import EgressProxy
from gateway.server import ModelGateway
from gateway.tls import sandbox_ca_bundle, sandbox_ca_environment
from mcp_servers.models import McpServer
from mcp_servers.serving import RunMcp, prepare_mcp, servers_of
from runs.titles import title_model
from sandbox.launcher import (
    BUBBLEWRAP,
    SANDBOX_CA_BUNDLE,
    Launch,
    RunPlace,
    agent_environment,
    egress_base_url,
    gateway_base_url,
    prepare_launch,
    prepare_place,
    sandbox_ids,
)
from skills.placement import place_skills
from skills.services import RunSkills, run_skills
from tenants.models import LanguageModel
from usage.models import UsageRecord
from workspaces.services import RunWorkspace, workspace_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionTerms:
    """What a run's session is started with, read once for the run; `fingerprint` tells whether a warm session was
    started with the same (it holds no secret: secret values are hashed into it, never kept)."""

    skills: RunSkills
    mcp_servers: list[McpServer]
    mcp_headers: dict[str, dict[str, str]]
    mcp_problems: dict[str, str]
    egress: EgressPolicy
    fingerprint: str


def session_terms(run: Run, agent: RunAgent) -> SessionTerms:
    """The terms of `run`'s session (synchronous: reads the database and the vault)."""
    skills = skills_of(run, agent)
    servers, headers, problems = servers_of(run, agent.version.mcp_servers)
    egress = agent.egress_policy()
    tenant = run.conversation.tenant
    budgets = {field.name: str(getattr(tenant, field.attname)) for field in tenant._meta.concrete_fields}
    # The tenant's budgets. A conversation's, an end user's and a run's own are checked at every call as the run's
    # (`gateway.calls`), whatever the session: a session made ahead (`runs.prewarm`) knows none of them.
    budgets = {name: value for name, value in budgets.items() if "budget" in name}
    terms = {
        "agent_version": str(agent.version.pk),
        "model": [run.model.pk, run.model.provider_model_id, run.model.provider],
        "fallback_model": agent.fallback_model.pk if agent.fallback_model else None,
        "skills": [str(version.pk) for version in skills.versions],
        "preferred_skills": skills.preferred,  # they are named in the system prompt
        "mcp_servers": [
            [str(server.pk), server.kind, server.url, server.command, server.args, server.allowed_tools]
            for server in servers
        ],
        "mcp_headers": headers,
        "mcp_problems": problems,
        "egress": asdict(egress),
        "budgets": budgets,
    }
    fingerprint = hashlib.sha256(json.dumps(terms, sort_keys=True, default=str).encode()).hexdigest()
    return SessionTerms(skills, servers, headers, problems, egress, fingerprint)


@dataclass(frozen=True)
class RunSetup:
    agent: RunAgent
    place: RunPlace
    workspace: RunWorkspace
    gateway: ModelGateway
    egress: EgressProxy
    launch: Launch
    resume: str | None  # the SDK session the run continues, if any
    skills: RunSkills
    mcp: RunMcp
    mcp_config: dict[str, Any]  # the CLI's MCP servers: no secret in it
    title_model: LanguageModel | None  # the model that names the conversation, if this run names it


async def prepare_run(
    run: Run,
    agent: RunAgent,
    terms: SessionTerms,
    resources: contextlib.AsyncExitStack,
    *,
    on_refusal: Refusal,
    on_usage: Callable[[UsageRecord], None],
    emit: Callable[[EventItem], None],
) -> RunSetup:
    """The place, open gateway and launch of a run of the `agent` version (`run_agent`) on its session's `terms`
    (`runs.sessions.session_terms`: its skills, MCP servers and egress policy); what must be undone goes on
    `resources` (its session's: a warm session keeps them for the conversation's next runs).

    `on_refusal` and `on_usage` hear from the gateway (see `gateway.calls.RunCalls`); `emit` takes the
    events of the platform's own tools (`file.presented`).

    Raises SandboxUnavailable when the run cannot be isolated, SkillsUnavailable when its skills'
    files cannot be had.
    """
    titling = await sync_to_async(title_model)(run)
    place = await asyncio.to_thread(prepare_place, str(run.pk), workspace_dir(run.conversation))
    # Removed last, after the CLI is gone: the run's directory, cgroup and anything left in it.
    resources.callback(place.remove)
    workspace = RunWorkspace(run, place.workspace, owner=sandbox_ids() if os.geteuid() == 0 else None)
    await workspace.sync_in()
    skills = terms.skills
    await asyncio.to_thread(place_skills, skills.versions, place.skills_dir)
    mcp = prepare_mcp(terms.mcp_servers, terms.mcp_headers, terms.mcp_problems, workspace, emit)
    resources.push_async_callback(mcp.close)
    gateway = await resources.enter_async_context(
        ModelGateway(
            run,
            socket_path=place.gateway_socket,
            owner=sandbox_ids(),
            on_refusal=on_refusal,
            on_usage=on_usage,
            mcp=mcp.relay,
            # Its fallback's, subagents' and title's calls, each at its own price.
            models=models_by_id([*agent.models, *([titling] if titling else [])]),
        )
    )
    egress = await resources.enter_async_context(
        EgressProxy(
            terms.egress,
            on_egress=lambda data: emit((EventType.EGRESS, data)),
            socket_path=place.egress_socket,
            owner=sandbox_ids(),
        )
    )
    base_url = gateway_base_url(place, gateway.base_url)
    # The sandbox trusts the egress CA, which signs the hosts whose requests get the tenant's secret headers.
    ca_bundle = await asyncio.to_thread(sandbox_ca_bundle)
    trust = sandbox_ca_environment(SANDBOX_CA_BUNDLE if place.kind == BUBBLEWRAP else str(ca_bundle))
    launch = prepare_launch(
        place,
        agent_environment(
            model_id=run.model.provider_model_id,
            config_dir=place.config_dir,
            gateway=gateway.cli_environment(base_url),
            egress={**egress.environment(egress_base_url(place, egress.url)), **trust},
        ),
        ca_bundle=ca_bundle,
    )
    return RunSetup(
        agent=agent,
        place=place,
        workspace=workspace,
        gateway=gateway,
        egress=egress,
        launch=launch,
        resume=await session_to_resume(run.conversation),
        skills=skills,
        mcp=mcp,
        mcp_config=mcp.cli_config(gateway.cli_mcp_servers(base_url)),
        title_model=titling,
    )


def skills_of(run: Run, agent: RunAgent) -> RunSkills:
    conversation = run.conversation
    # The conversation's choice, else the agent's: either narrows what the tenant has, never widens it.
    choice = conversation.skills if conversation.skills is not None else agent.version.skills
    return run_skills(conversation.tenant, choice, run.skills, run.preferred_skills, run.input)


async def session_to_resume(conversation: Conversation) -> str | None:
    """The conversation's SDK session, if its transcript is stored; without it the CLI refuses to resume."""
    session_id = conversation.sdk_session_id or None
    if session_id and not await SessionEntry.objects.filter(conversation=conversation, session_id=session_id).aexists():
        logger.warning(
            "Conversation %s: session %s has no stored transcript; starting a new one", conversation.pk, session_id
        )
        return None
    return session_id
