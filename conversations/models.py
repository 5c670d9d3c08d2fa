import uuid
from typing import Any

from django.db import models
from django.db.models import Q

from tenants.models import LanguageModel, Tenant


class ConversationQuerySet(models.QuerySet["Conversation"]):
    def for_tenant(self, tenant: Tenant | str) -> "ConversationQuerySet":
        return self.filter(tenant=tenant)


class ConversationManager(models.Manager.from_queryset(ConversationQuerySet)):  # type: ignore[misc]
    """Conversations, except those made ahead and not handed out yet (`Conversation.reserved`)."""

    def get_queryset(self) -> ConversationQuerySet:
        return super().get_queryset().filter(reserved=False)


class Conversation(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        ARCHIVED = "archived", "Archived"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="conversations")
    user_id = models.CharField(max_length=200, blank=True, help_text="The tenant's end user (X-User-ID).")
    agent = models.ForeignKey(
        "agents.AgentProfile",
        null=True,
        blank=True,
        # RESTRICT, not PROTECT: a profile in use cannot be deleted, but deleting the tenant deletes both.
        on_delete=models.RESTRICT,
        related_name="conversations",
        help_text="Its agent profile; empty: the tenant's default agent.",
    )
    agent_version = models.ForeignKey(
        "agents.AgentVersion",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="+",
        help_text="A version it is pinned to (name@version); empty: its agent's current version.",
    )
    model = models.ForeignKey(
        LanguageModel,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="conversations",
        help_text="A model it names over its agent's; empty: its agent's model.",
    )
    title = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    sdk_session_id = models.CharField(max_length=100, blank=True, help_text="The Agent SDK session to resume.")
    # Where its agent's CLI is kept warm between runs (runs.sessions): its next run goes to that worker's queue.
    warm_worker = models.CharField(max_length=200, blank=True, help_text="The worker keeping its session warm.")
    warm_session = models.CharField(max_length=32, blank=True, help_text="The warm session that may serve it next.")
    warm_until = models.DateTimeField(null=True, blank=True, help_text="When its warm session closes if unused.")
    # Made ahead by a worker, with a session started and waiting for a first message (runs.prewarm): nobody's
    # until `create_conversation` hands it out, and invisible until then (`objects` leaves it out).
    reserved = models.BooleanField(default=False, editable=False)
    skills = models.JSONField(
        null=True, blank=True, help_text="The skills (names) its runs may use; null = all the tenant's enabled ones."
    )
    mcp_servers = models.JSONField(
        null=True, blank=True, help_text="The MCP servers (names) its runs get; null = all the tenant's enabled ones."
    )
    budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="USD all its runs together may spend on model calls; empty = unlimited",
    )
    budget_calls = models.PositiveIntegerField(
        null=True, blank=True, help_text="Model calls all its runs together may make; empty = unlimited"
    )
    context_usage = models.JSONField(
        null=True, blank=True, help_text="How full its context window was after its last turn (event context.usage)."
    )
    # The last event seq handed out; bumped under a row lock so seq stays gap-free.
    last_seq = models.PositiveBigIntegerField(default=0)
    # The lease: the one run that may be queued or running in this conversation.
    active_run = models.OneToOneField(
        "Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConversationManager()
    all_objects = ConversationQuerySet.as_manager()  # reserved ones too: the workers' bookkeeping

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["tenant", "user_id", "-created_at"]),
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)

    @property
    def is_archived(self) -> bool:
        return self.status == self.Status.ARCHIVED


class RunQuerySet(models.QuerySet["Run"]):
    def for_tenant(self, tenant: Tenant | str) -> "RunQuerySet":
        return self.filter(conversation__tenant=tenant)

    def unfinished(self) -> "RunQuerySet":
        return self.filter(status__in=Run.UNFINISHED)


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting for a person"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted"

    UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.WAITING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="runs")
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="runs")
    agent_version = models.ForeignKey(
        "agents.AgentVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The agent profile version it ran with (its run.queued event keeps the name and number).",
    )
    user_id = models.CharField(max_length=200, blank=True)
    input = models.TextField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Running: the worker's last beat. Queued: when it was last handed to a worker."
    )
    interrupt_requested_at = models.DateTimeField(null=True, blank=True)
    suspensions = models.PositiveIntegerField(
        default=0,
        help_text="How often it was suspended waiting for a person; a queued run with suspensions resumes its session.",
    )
    launch_seconds = models.FloatField(
        null=True, blank=True, help_text="How long its sandboxed CLI took to start and answer, in seconds."
    )
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process running it.")
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="USD this run may spend on model calls; empty = unlimited",
    )
    budget_calls = models.PositiveIntegerField(
        null=True, blank=True, help_text="Model calls this run may make; empty = unlimited"
    )
    skills = models.JSONField(
        null=True, blank=True, help_text="The message's choice of skills (names); null = the conversation's."
    )
    preferred_skills = models.JSONField(
        default=list, blank=True, help_text="Skills the agent is told to use first for this message."
    )
    mcp_servers = models.JSONField(
        null=True, blank=True, help_text="The message's choice of MCP servers (names); null = the conversation's."
    )
    mcp_tokens = models.BinaryField(
        null=True, blank=True, editable=False, help_text="The message's MCP secrets, encrypted; gone when the run ends."
    )

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["conversation", "-created_at"]),
            models.Index(
                fields=["status", "heartbeat_at"],
                condition=Q(status__in=["queued", "running"]),
                name="run_unfinished_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class Event(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="events")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=50)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [models.UniqueConstraint(fields=["conversation", "seq"], name="event_seq_unique")]
        indexes = [models.Index(fields=["run", "seq"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"

    def as_envelope(self) -> dict[str, Any]:
        """The wire form shared by REST, SSE and WebSocket."""
        return {
            "seq": self.seq,
            "type": self.type,
            "run_id": str(self.run_id),
            "at": self.created_at.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }


class SessionEntryQuerySet(models.QuerySet["SessionEntry"]):
    def for_session(
        self, conversation_id: uuid.UUID | str, project_key: str, session_id: str
    ) -> "SessionEntryQuerySet":
        """A session's main transcript and its subagents' transcripts, within one conversation."""
        return self.filter(conversation_id=conversation_id, project_key=project_key, session_id=session_id)


class SessionEntry(models.Model):
    """One line of an Agent SDK session transcript, mirrored here by `DatabaseSessionStore`."""

    # Not indexed alone: the constraints below lead with it.
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="session_entries", db_index=False
    )
    project_key = models.CharField(max_length=255, help_text="The SDK's project key: the sanitized cwd of the run.")
    session_id = models.CharField(max_length=255)
    subpath = models.CharField(
        max_length=255, blank=True, help_text="Empty for the main transcript; `subagents/agent-…` for a subagent's."
    )
    position = models.PositiveIntegerField(help_text="Append order within its transcript.")
    uuid = models.CharField(
        max_length=255, blank=True, help_text="The entry's own uuid, if it has one; an entry repeating it is ignored."
    )
    # JSON text, not jsonb: PostgreSQL's jsonb refuses the \u0000 that tool output puts into transcripts.
    data = models.TextField(help_text="The entry as JSON.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SessionEntryQuerySet.as_manager()

    class Meta:
        ordering = ["conversation_id", "project_key", "session_id", "subpath", "position"]
        constraints = [
            # Also the index that loads a transcript in order.
            models.UniqueConstraint(
                fields=["conversation", "project_key", "session_id", "subpath", "position"],
                name="session_entry_position_unique",
            ),
            models.UniqueConstraint(
                fields=["conversation", "project_key", "session_id", "subpath", "uuid"],
                condition=~Q(uuid=""),
                name="session_entry_uuid_unique",
            ),
        ]
        indexes = [
            models.Index(
                fields=["conversation", "project_key", "subpath", "session_id", "created_at"],
                name="session_entry_listing_idx",
            )
        ]
        verbose_name_plural = "session entries"

    def __str__(self) -> str:
        return f"{self.session_id}/{self.subpath or 'main'} #{self.position}"
