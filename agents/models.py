"""Agent profiles: what a tenant's agents are, version by version.

A profile's every change is a new, immutable AgentVersion; a conversation follows its profile's current
version, or keeps one it pinned (`name@version`). Each field of a version sets one Agent SDK option
(see `runs.options.agent_options`); a run records the version it used.
"""

from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from tenants.models import LanguageModel, Tenant, slug_validator

# 100,000 characters is some 25,000 tokens added to every model call of every run.
MAX_INSTRUCTIONS_CHARS = 100_000
DEFAULT_PROFILE_NAME = "default"
# An approval nobody decides is denied after this long (per profile); a week at most.
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 3600
MAX_APPROVAL_TIMEOUT_SECONDS = 7 * 24 * 3600


class AgentProfileQuerySet(models.QuerySet["AgentProfile"]):
    def for_tenant(self, tenant: Tenant | str) -> "AgentProfileQuerySet":
        return self.filter(tenant=tenant)


class AgentProfile(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=63, validators=[slug_validator], help_text="Unique in the tenant.")
    description = models.CharField(max_length=1000, blank=True)
    is_default = models.BooleanField(
        default=False, help_text="Conversations that name no agent get this one; a tenant has exactly one."
    )
    choosable = models.BooleanField(default=False, help_text="End users may pick it in the chat page.")
    current_version = models.ForeignKey(
        "AgentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AgentProfileQuerySet.as_manager()

    class Meta:
        ordering = ["tenant", "name"]
        verbose_name = "agent profile"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="agent_name_once_per_tenant"),
            models.UniqueConstraint(fields=["tenant"], condition=Q(is_default=True), name="one_default_agent"),
        ]

    def __str__(self) -> str:
        return self.name


class AgentVersion(models.Model):
    """One immutable state of a profile. Rows are only ever added (`agents.services.add_version`)."""

    class Kind(models.TextChoices):
        AGENT = "agent", "Agent (tools in a sandbox)"
        CHAT = "chat", "Chat (no tools, no sandbox)"

    class PromptScope(models.TextChoices):
        NEXT_TURN = "next_turn", "Edits reach existing conversations at their next turn"
        NEW_CONVERSATIONS = "new_conversations", "A conversation keeps the instructions it started with"

    class BusyPolicy(models.TextChoices):
        REJECT = "reject", "Refuse it (409) until the run ends"
        QUEUE = "queue", "Queue it: it runs after the current run, in order"
        STEER = "steer", "Steer: deliver it into the running session as the next user input"
        INTERRUPT = "interrupt", "Interrupt the current run and start with it"

    class Effort(models.TextChoices):
        DEFAULT = "", "Model default"
        LOW = "low", "Low"
        MEDIUM = "medium", "Medium"
        HIGH = "high", "High"
        MAX = "max", "Max"

    profile = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.AGENT)
    instructions = models.TextField(
        blank=True, max_length=MAX_INSTRUCTIONS_CHARS, help_text="Appended to the agent's system prompt."
    )
    prompt_scope = models.CharField(max_length=20, choices=PromptScope.choices, default=PromptScope.NEXT_TURN)
    model = models.ForeignKey(
        LanguageModel,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty: the tenant's default model.",
    )
    fallback_model = models.ForeignKey(
        LanguageModel,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Used when the model is overloaded.",
    )
    effort = models.CharField(max_length=10, choices=Effort.choices, default=Effort.DEFAULT, blank=True)
    thinking_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(128_000)],
        help_text="Tokens of extended thinking per model call; 0 turns thinking off; empty: the model's default.",
    )
    max_turns = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Most agent turns per run; empty: no limit."
    )
    run_budget_usd = models.DecimalField(
        "run budget (USD)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Most a run may spend; lowers the tenant's run budget, never raises it. Empty: the tenant's.",
    )
    run_budget_calls = models.PositiveIntegerField(
        "run budget (model calls)", null=True, blank=True, help_text="Most model calls a run may make."
    )
    allowed_tools = models.JSONField(
        default=list,
        blank=True,
        help_text="Tool patterns the agent may use, e.g. Read, Bash(git *); empty: every tool.",
    )
    disallowed_tools = models.JSONField(default=list, blank=True, help_text="Tool patterns the agent may never use.")
    permission_rules = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"pattern": "Bash(rm *)", "action": "allow" | "ask" | "deny"}]; deny wins over ask, ask over allow.',
    )
    approval_timeout_seconds = models.PositiveIntegerField(
        default=DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        validators=[MinValueValidator(10), MaxValueValidator(MAX_APPROVAL_TIMEOUT_SECONDS)],
        help_text="How long an approval or a question waits for a person before it is denied by itself.",
    )
    busy_policy = models.CharField(
        max_length=10,
        choices=BusyPolicy.choices,
        default=BusyPolicy.REJECT,
        help_text="What a message sent while a run is active does.",
    )
    skills = models.JSONField(
        null=True, blank=True, help_text="Skills its runs get by default; null: all the tenant's."
    )
    mcp_servers = models.JSONField(
        null=True, blank=True, help_text="MCP servers its runs get by default; null: all the tenant's."
    )
    egress_allowlist = models.JSONField(
        "egress allow-list",
        null=True,
        blank=True,
        help_text="Narrows the tenant's egress allow-list for its runs (a connection must pass both); null: the "
        "tenant's as is.",
    )
    subagents = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"name", "description", "prompt", "tools": [...] | null, "model": id | null}]',
    )
    output_schema = models.JSONField(
        null=True, blank=True, help_text="A JSON Schema the run's final answer must fit (structured output)."
    )
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["profile", "-number"]
        constraints = [models.UniqueConstraint(fields=["profile", "number"], name="agent_version_once")]

    def __str__(self) -> str:
        return f"{self.profile.name}@{self.number}"

    @property
    def label(self) -> str:
        return f"{self.profile.name}@{self.number}"

    def summary(self) -> dict[str, Any]:
        """How events and the REST API name it: `run.queued`, `run.started`, a run's `agent`."""
        summary: dict[str, Any] = {"name": self.profile.name, "version": self.number, "kind": self.kind}
        if self.egress_allowlist is not None:  # null: the tenant's list as is, which run.started states itself
            summary["egress_allowlist"] = self.egress_allowlist
        return summary

    @property
    def is_chat(self) -> bool:
        return self.kind == self.Kind.CHAT
