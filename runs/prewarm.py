"""Pre-warmed sessions: conversations made ahead, their sandboxed CLI started and waiting for a first message.

With PREWARMED_SESSIONS above 0, every worker keeps, for each agent profile (kind `agent`) of each active tenant,
that many conversations between them ready: reserved (`Conversation.reserved`: nobody's, listed nowhere), each
with a warm session (`runs.sessions`) started from what a first message would start with (the profile's current
version, its model, skills and MCP servers, the tenant's egress policy and budgets). `create_conversation` hands
one out when a new conversation asks for nothing else (`claim`); its first message then goes to the worker holding
the session, like any warm conversation's next one: no sandbox launch, no CLI start. A session that no longer fits
(the profile changed since) closes at that message, which runs cold, and a new one is made.

A reserved conversation is kept while its worker renews it (every PREWARM_CHECK_SECONDS, for PREWARM_LEASE_SECONDS);
one left by a worker that died is removed by the next worker's check.
"""

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from uuid import UUID

from claude_agent_sdk import ClaudeSDKClient
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import AgentProfile, AgentVersion
from agents.services import RunAgent, run_agent
from conversations.models import Conversation, Run
from runs import lease
from runs.executor import disconnect, mirror_inside_paths
from runs.loop import submit
from runs.options import agent_options
from runs.prepare import SessionTerms, prepare_run, session_terms
from runs.sessions import AgentSession, mark_cold, on_own_connection, warm_sessions
from sandbox.report import wait_for_report
from tenants.models import Tenant

logger = logging.getLogger(__name__)

PREWARM_CHECK_SECONDS = 5.0
PREWARM_LEASE_SECONDS = 60.0

_started = False


def start_prewarming() -> None:
    """Keep this process's share of pre-warmed sessions from now on (once per process; nothing when off)."""
    global _started
    if _started or settings.PREWARMED_SESSIONS <= 0:
        return
    _started = True
    submit(_prewarm_forever())


async def _prewarm_forever() -> None:
    while True:
        try:
            await prewarm_once()
        except Exception:
            logger.exception("Pre-warming sessions failed; trying again")
        await asyncio.sleep(PREWARM_CHECK_SECONDS)


async def prewarm_once() -> int:
    """Renew this worker's reserved conversations, remove those of workers that died, and start the sessions that
    are missing (one at a time: a launch takes half a second of two cores); how many were started."""
    held = warm_sessions.prewarmed()
    stale = await on_own_connection(_stale, held)
    for conversation_id in stale:
        await warm_sessions.close(conversation_id)
    await on_own_connection(_renew, [session.id for session in held.values() if session.conversation_id not in stale])
    started = 0
    # Within the worker's cap of warm sessions, which closes its least recently used to make room.
    while len(warm_sessions.prewarmed()) < settings.WARM_SESSIONS_MAX and (wanted := await on_own_connection(_reserve)):
        conversation, version = wanted
        if await _start(conversation, version):
            started += 1
        else:
            await on_own_connection(mark_cold, conversation.pk)
            break
    return started


def _stale(held: dict[UUID, AgentSession]) -> set[UUID]:
    """The held sessions that a first message would no longer find fitting: their profile has another version, or
    is gone, or its tenant inactive."""
    current = dict(
        Conversation.all_objects.filter(pk__in=held, agent__tenant__status=Tenant.Status.ACTIVE).values_list(
            "pk", "agent__current_version"
        )
    )
    return {pk for pk, session in held.items() if current.get(pk) != session.version_id}


def _renew(held: list[str]) -> None:
    now = timezone.now()
    Conversation.all_objects.filter(reserved=True, warm_session__in=held).update(
        warm_until=now + timedelta(seconds=PREWARM_LEASE_SECONDS)
    )
    Conversation.all_objects.filter(reserved=True, warm_until__lt=now).delete()


def _targets() -> Iterator[AgentProfile]:
    profiles = AgentProfile.objects.filter(
        tenant__status=Tenant.Status.ACTIVE, current_version__kind=AgentVersion.Kind.AGENT
    ).select_related("tenant", "current_version")
    return profiles.iterator()


def _reserve() -> tuple[Conversation, AgentVersion] | None:
    """A reserved conversation for a profile short of its pre-warmed sessions, marked as this worker's; None when
    none is short."""
    now = timezone.now()
    for profile in _targets():
        with transaction.atomic():
            # One worker at a time counts and adds a profile's: two would make one too many each.
            locked = AgentProfile.objects.select_for_update(skip_locked=True).filter(pk=profile.pk).first()
            if locked is None:
                continue
            ready = Conversation.all_objects.filter(
                reserved=True, agent=profile, agent_version=None, warm_until__gt=now
            ).count()
            if ready >= settings.PREWARMED_SESSIONS or profile.current_version is None:
                continue
            conversation = Conversation.all_objects.create(
                tenant=profile.tenant,
                agent=profile,
                reserved=True,
                warm_worker=lease.warm_worker(),
                warm_until=now + timedelta(seconds=PREWARM_LEASE_SECONDS),
            )
            return conversation, profile.current_version
    return None


async def _start(conversation: Conversation, version: AgentVersion) -> bool:
    """Start the session a first message of `conversation` would start with, and keep it warm for that message."""
    run, agent, terms = await on_own_connection(_first_run, conversation, version)
    session = AgentSession(conversation.pk, terms.fingerprint)
    try:
        session.setup = await prepare_run(
            run, agent, terms, session.resources, on_refusal=lambda *_: None, on_usage=lambda _: None, emit=session.emit
        )
        client = session.client = ClaudeSDKClient(agent_options(run, session.setup, session, stderr=session.stderr))
        session.resources.push_async_callback(disconnect, client, conversation.pk)
        connecting = asyncio.create_task(client.connect())
        launch = session.setup.launch
        session.report = launch.report
        if launch.report_path is not None:
            session.report = await wait_for_report(launch.report_path, connecting)
        await connecting
        if session.report is None or session.report.get("missing_layers"):
            raise RuntimeError(f"the sandbox is short of layers: {session.report}")
        mirror_inside_paths(client, launch)
    except Exception:
        logger.exception("Pre-warming a session for agent profile %s failed", conversation.agent_id)
        await session.close()
        return False
    session.release()
    session.prewarmed, session.version_id = True, version.pk
    return await warm_sessions.keep(session)


def _first_run(conversation: Conversation, version: AgentVersion) -> tuple[Run, RunAgent, SessionTerms]:
    run = placeholder_run(conversation, version)
    agent = run_agent(run)
    return run, agent, session_terms(run, agent)


def placeholder_run(conversation: Conversation, version: AgentVersion) -> Run:
    """The run a first message of `conversation` would be, never stored: what its session is started from."""
    model = version.model or conversation.tenant.default_model
    return Run(
        id=uuid.uuid4(),
        conversation=Conversation.all_objects.select_related("tenant").get(pk=conversation.pk),
        agent_version=version,
        model=model,
        input="",
        created_at=timezone.now(),
    )
