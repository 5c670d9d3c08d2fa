"""Agent profiles' workflows: create, change (a new version), choose, delete, and the version a run uses."""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max, ProtectedError, Q, QuerySet, RestrictedError

from agents.egress import build_egress_policy
from agents.models import DEFAULT_PROFILE_NAME, AgentProfile, AgentVersion
from agents.rules import ToolPolicy
from agents.spec import AgentSpec, check_spec, field_problem
from api.errors import Conflict, ServiceError
from conversations.models import Conversation
from gateway.allowlist import EgressPolicy
from tenants.models import LanguageModel, Tenant, slug_validator

# --- Profiles and versions -------------------------------------------------------------------------


def default_profile(tenant: Tenant) -> AgentProfile:
    """The tenant's default profile; a tenant created before profiles (or by hand) gets one on first use."""
    profile = AgentProfile.objects.select_related("current_version").filter(tenant=tenant, is_default=True).first()
    if profile is not None:
        return profile
    try:
        with transaction.atomic():
            return create_profile(tenant, DEFAULT_PROFILE_NAME, AgentSpec(), is_default=True, choosable=True)
    except (IntegrityError, Conflict):
        # Another request made it first (or a profile named "default" exists: it becomes the default).
        profile = AgentProfile.objects.filter(tenant=tenant, is_default=True).first()
        if profile is None:
            AgentProfile.objects.filter(tenant=tenant, name=DEFAULT_PROFILE_NAME).update(is_default=True)
            profile = AgentProfile.objects.get(tenant=tenant, is_default=True)
        return profile


def create_profile(
    tenant: Tenant,
    name: str,
    spec: AgentSpec,
    *,
    description: str = "",
    choosable: bool = False,
    is_default: bool = False,
    created_by: str = "",
) -> AgentProfile:
    """A new profile with its version 1, current."""
    try:
        slug_validator(name)
    except Exception:
        raise field_problem("name", str(slug_validator.message)) from None
    check_spec(tenant, spec)
    taken = Conflict(f"The tenant already has an agent named {name!r}.", code="agent_exists")
    try:
        with transaction.atomic():
            if AgentProfile.objects.filter(tenant=tenant, name=name).exists():
                raise taken
            if is_default:
                AgentProfile.objects.filter(tenant=tenant, is_default=True).update(is_default=False)
            profile = AgentProfile.objects.create(
                tenant=tenant, name=name, description=description, choosable=choosable, is_default=is_default
            )
            profile.current_version = _store_version(profile, 1, spec, created_by)
            profile.save(update_fields=["current_version"])
    except IntegrityError:
        # Another request made a profile of that name, or another default, between the check and the insert.
        if AgentProfile.objects.filter(tenant=tenant, name=name).exists():
            raise taken from None
        raise Conflict("Another change to the tenant's agents came first; try again.", code="agent_conflict") from None
    return profile


def add_version(
    profile: AgentProfile, spec: AgentSpec, *, created_by: str = "", make_current: bool = True
) -> AgentVersion:
    """Store `spec` as the profile's next version (immutable), current unless told otherwise."""
    check_spec(profile.tenant, spec)
    with transaction.atomic():
        locked = AgentProfile.objects.select_for_update().get(pk=profile.pk)
        number = (locked.versions.aggregate(last=Max("number"))["last"] or 0) + 1
        version = _store_version(locked, number, spec, created_by)
        if make_current:
            locked.current_version = version
            locked.save(update_fields=["current_version", "updated_at"])
    profile.refresh_from_db()
    return version


def update_profile(
    profile: AgentProfile,
    changes: Mapping[str, Any],
    *,
    description: str | None = None,
    choosable: bool | None = None,
    is_default: bool | None = None,
    created_by: str = "",
) -> AgentProfile:
    """Change a profile: `changes` to its version fields make a new current version (none if nothing changed);
    its description, choosability and default flag change in place."""
    with transaction.atomic():
        if changes:
            current = AgentSpec.of(profile.current_version) if profile.current_version else AgentSpec()
            spec = current.changed(changes)
            if asdict(spec) != asdict(current):
                add_version(profile, spec, created_by=created_by)
        updated = []
        if description is not None and description != profile.description:
            profile.description = description
            updated.append("description")
        if choosable is not None and choosable != profile.choosable:
            profile.choosable = choosable
            updated.append("choosable")
        if is_default is not None and is_default != profile.is_default:
            if not is_default:
                raise Conflict(
                    "A tenant always has a default agent: make another one the default.", code="default_agent"
                )
            AgentProfile.objects.filter(tenant=profile.tenant, is_default=True).update(is_default=False)
            profile.is_default = True
            updated.append("is_default")
        if updated:
            profile.save(update_fields=[*updated, "updated_at"])
    profile.refresh_from_db()
    return profile


def make_current(profile: AgentProfile, number: int) -> AgentProfile:
    """Point the profile at one of its versions (roll back or forward)."""
    version = profile.versions.filter(number=number).first()
    if version is None:
        raise ServiceError(f"Agent {profile.name!r} has no version {number}.", status=404, code="not_found")
    profile.current_version = version
    profile.save(update_fields=["current_version", "updated_at"])
    return profile


def check_deletable(profile: AgentProfile) -> None:
    """Refuse (Conflict) to delete the default profile, or one that conversations use."""
    if profile.is_default:
        raise Conflict("The default agent cannot be deleted; make another one the default first.", code="default_agent")
    used = profile.conversations.count()
    if used:
        raise _in_use(profile, used)


def _in_use(profile: AgentProfile, used: int) -> Conflict:
    return Conflict(
        f"{used} conversation(s) use agent {profile.name!r}; delete them or move them to another agent first.",
        code="agent_in_use",
    )


def delete_profile(profile: AgentProfile) -> None:
    """Delete a profile and its versions; refused for the default one and while conversations use it (runs
    keep their events, which name the version, and lose the link to it)."""
    check_deletable(profile)
    try:
        with transaction.atomic():
            AgentProfile.objects.filter(pk=profile.pk).update(current_version=None)
            # Conversations made ahead for it (runs.prewarm), nobody's yet, go with it.
            Conversation.all_objects.filter(agent=profile, reserved=True).delete()
            profile.delete()
    except (ProtectedError, RestrictedError) as error:
        # A conversation of this agent was created since the check: its foreign key refused.
        used = error.protected_objects if isinstance(error, ProtectedError) else error.restricted_objects
        raise _in_use(profile, len(used)) from None


def _store_version(profile: AgentProfile, number: int, spec: AgentSpec, created_by: str) -> AgentVersion:
    values = asdict(spec)
    model, fallback = values.pop("model"), values.pop("fallback_model")
    for name in ("allowed_tools", "disallowed_tools", "permission_rules", "subagents"):
        values[name] = [dict(item) if isinstance(item, Mapping) else item for item in values[name]]
    for name in ("skills", "mcp_servers", "egress_allowlist"):
        values[name] = None if values[name] is None else list(values[name])
    return AgentVersion.objects.create(
        profile=profile,
        number=number,
        model_id=model or None,
        fallback_model_id=fallback or None,
        created_by=created_by[: AgentVersion._meta.get_field("created_by").max_length],
        **values,
    )


# --- Which version a conversation or run gets ------------------------------------------------------


@dataclass(frozen=True)
class AgentChoice:
    """A reference to an agent (`name` or `name@version`) resolved in a tenant."""

    profile: AgentProfile
    pinned: AgentVersion | None = None

    @property
    def version(self) -> AgentVersion:
        version = self.pinned or self.profile.current_version
        if version is None:
            raise Conflict(f"Agent {self.profile.name!r} has no version to run.", code="agent_unavailable")
        return version


def choose_agent(tenant: Tenant, reference: str | None, *, field_name: str = "agent") -> AgentChoice:
    """The agent a reference names (`support`, `support@3`), or the tenant's default for None / ""."""
    if not reference:
        return AgentChoice(default_profile(tenant))
    name, _, number = reference.partition("@")
    profile = AgentProfile.objects.select_related("current_version").filter(tenant=tenant, name=name).first()
    if profile is None:
        choices = ", ".join(AgentProfile.objects.filter(tenant=tenant).values_list("name", flat=True)) or "none"
        raise _unknown(field_name, f"No agent is named {name!r}. Choose one of: {choices}.")
    if not number:
        return AgentChoice(profile)
    if not number.isdigit():
        raise _unknown(field_name, f"Write name@version with a version number, such as {name}@1.")
    pinned = profile.versions.filter(number=int(number)).first()
    if pinned is None:
        raise _unknown(field_name, f"Agent {name!r} has no version {number}.")
    return AgentChoice(profile, pinned)


def end_user_agents(tenant: Tenant) -> QuerySet[AgentProfile]:
    """The agents an end user may start a conversation with in the chat page: the default one (what naming
    none gives) first, then those the tenant marks choosable, by name; a profile with no version is left out."""
    default_profile(tenant)  # a tenant made before profiles gets its default now
    return (
        AgentProfile.objects.for_tenant(tenant)
        .filter(Q(choosable=True) | Q(is_default=True), current_version__isnull=False)
        .select_related("current_version")
        .order_by("-is_default", "name")
    )


def choose_agent_as_end_user(tenant: Tenant, reference: str | None, *, field_name: str = "agent") -> AgentChoice:
    """`choose_agent` for an end user's own chat session: only the agents `end_user_agents` offers, and never a
    pinned version (a tenant that narrowed an agent's tools must not see its older version chosen back).

    An agent the tenant keeps from end users answers exactly like a missing one."""
    if not reference:
        return choose_agent(tenant, reference, field_name=field_name)
    offered = {profile.name: profile for profile in end_user_agents(tenant)}
    name, at, _ = reference.partition("@")
    if name not in offered:
        raise _unknown(field_name, f"No agent is named {name!r}. Choose one of: {', '.join(offered)}.")
    if at:
        raise _unknown(field_name, f"Name the agent without a version: {name}.")
    return AgentChoice(offered[name])


def _unknown(field_name: str, message: str) -> ServiceError:
    return ServiceError(f"{field_name}: {message}", code="unknown_agent", fields={field_name: [message]})


def run_version(conversation: Any, reference: str | None = None) -> AgentVersion:
    """The version a run of `conversation` uses: the message's agent (`reference`), else the conversation's
    pinned version, else its agent's current version (the tenant's default agent when it names none)."""
    tenant = conversation.tenant
    if reference:
        return choose_agent(tenant, reference).version
    if conversation.agent_version_id is not None:
        return conversation.agent_version
    profile = conversation.agent if conversation.agent_id is not None else default_profile(tenant)
    return AgentChoice(profile).version


@dataclass(frozen=True)
class RunAgent:
    """The agent version a run uses, with the catalog models it may call besides the run's own."""

    version: AgentVersion
    fallback_model: LanguageModel | None
    subagent_models: Mapping[str, LanguageModel]  # by subagent name

    @property
    def models(self) -> list[LanguageModel]:
        """Every other catalog model the run's calls may name (the gateway meters each at its own price)."""
        found = [self.fallback_model, *self.subagent_models.values()]
        return list({model.pk: model for model in found if model is not None}.values())

    def policy(self, mcp_tools: Mapping[str, Sequence[str]] | None = None) -> ToolPolicy:
        """The profile's decision on each tool call; `mcp_tools`: per MCP server, the tools it allows (empty: all)."""
        version = self.version
        return ToolPolicy.of(
            version.profile.name, version.allowed_tools, version.disallowed_tools, version.permission_rules, mcp_tools
        )

    def egress_policy(self) -> EgressPolicy:
        """Where the run's sandbox may connect (see `egress_policy`)."""
        return egress_policy(self.version.profile.tenant, self.version)

    def summary(self) -> dict[str, Any]:
        """What `run.started` says of it."""
        summary = {**self.version.summary(), "busy_policy": self.version.busy_policy}
        if asks := self.policy().ask_patterns:
            summary["permissions"] = {"ask": asks, "approval_timeout_seconds": self.version.approval_timeout_seconds}
        return summary


def egress_policy(tenant: Tenant, version: AgentVersion | None) -> EgressPolicy:
    """Where a run of `version` in `tenant` may connect: the tenant's allow-list, narrowed by the version's (a
    connection must pass both), the operator's deny list first, and the tenant's egress headers with their
    `${secrets}` revealed for the hosts the run may reach (a host whose secret is missing is refused, saying which).

    Synchronous (reads the database and the vault): call it through sync_to_async from the gateway. The revealed
    values live only in the returned policy; never log it or put it in an event (`EgressPolicy.summary` is safe)."""
    return build_egress_policy(tenant, None if version is None else version.egress_allowlist)


def run_agent(run: Any) -> RunAgent:
    """The agent of a claimed run: the version it recorded when it was queued (a run stored without one, by an
    older platform, gets its conversation's)."""
    version = run.agent_version or run_version(run.conversation)
    subagent_ids = {sub["name"]: sub["model"] for sub in version.subagents if sub.get("model")}
    models = LanguageModel.objects.in_bulk(set(subagent_ids.values()))
    return RunAgent(
        version,
        version.fallback_model,
        {name: models[model_id] for name, model_id in subagent_ids.items() if model_id in models},
    )
