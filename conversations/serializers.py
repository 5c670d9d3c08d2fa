import json
from decimal import Decimal
from typing import Any
from uuid import UUID

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.serializers import MAX_BIGINT, MAX_INTEGER, StrictModelSerializer, StrictSerializer
from conversations.models import Conversation, Event, Run
from mcp_servers.models import SECRET_NAME
from runs.services import Disposition, MessageQueue, RunOptions, Sent, message_queue, message_text_problem
from tenants.auth import USER_ID_MAX_LENGTH, validate_user_id


class BudgetSerializer(StrictSerializer):
    usd = serializers.DecimalField(max_digits=12, decimal_places=6, min_value=Decimal(0), required=False)
    calls = serializers.IntegerField(min_value=0, max_value=MAX_INTEGER, required=False)


class BudgetLimitsSerializer(serializers.Serializer):
    """A conversation's own budget as it reads back: each limit, or null where it sets none."""

    usd = serializers.DecimalField(max_digits=12, decimal_places=6, allow_null=True, help_text="null: no USD limit.")
    calls = serializers.IntegerField(allow_null=True, help_text="null: no limit on model calls.")


class ConversationAgentSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField(allow_null=True, help_text="The version it is pinned to; null: the current one.")


class ContextCategorySerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The CLI's id of the category: `system_prompt`, `messages`, `free_space`, …")
    name = serializers.CharField(help_text="Its name as the CLI's `/context` shows it: `System prompt`, `Messages`, …")
    kind = serializers.CharField(help_text="`used`; `buffer`: kept free for compacting; `free`.")
    tokens = serializers.IntegerField()
    deferred = serializers.BooleanField(help_text="Tools the CLI loads only when the agent looks for them.")


class ContextUsageSerializer(serializers.Serializer):
    """How full the conversation's context window was after its last turn, as the CLI counted it (`context.usage`)."""

    total_tokens = serializers.IntegerField(help_text="What the context holds: its `used` categories together.")
    max_tokens = serializers.IntegerField(help_text="What the CLI lets the context reach.")
    window = serializers.IntegerField(help_text="The model's context window: all the categories together.")
    percentage = serializers.FloatField(help_text="The share of the window in use, in percent, as the CLI rounds it.")
    auto_compact_threshold = serializers.IntegerField(
        allow_null=True, help_text="Where the CLI compacts the conversation; null: it does not."
    )
    categories = ContextCategorySerializer(many=True, help_text="The window by category, in the CLI's order.")


class ConversationSerializer(serializers.ModelSerializer):
    model = serializers.SerializerMethodField()
    agent = serializers.SerializerMethodField()
    tenant = serializers.CharField(source="tenant_id", read_only=True)
    active_run = serializers.UUIDField(source="active_run_id", read_only=True, allow_null=True)
    session_id = serializers.CharField(source="sdk_session_id", read_only=True)
    budget = serializers.SerializerMethodField()
    context_usage = serializers.SerializerMethodField()

    class Meta:
        model = Conversation
        fields = [
            "id",
            "tenant",
            "user_id",
            "agent",
            "model",
            "title",
            "status",
            "skills",
            "mcp_servers",
            "budget",
            "context_usage",
            "session_id",
            "active_run",
            "last_seq",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(help_text="The model its next run uses: its own, else its agent's."))
    def get_model(self, conversation: Conversation) -> str:
        if conversation.model_id:
            return conversation.model_id
        version = conversation.agent_version or (conversation.agent.current_version if conversation.agent else None)
        return (version.model_id if version else None) or conversation.tenant.default_model_id

    @extend_schema_field(ConversationAgentSerializer(allow_null=True, help_text="null: the tenant's default agent."))
    def get_agent(self, conversation: Conversation) -> dict[str, Any] | None:
        if conversation.agent is None:
            return None
        pinned = conversation.agent_version
        return {"name": conversation.agent.name, "version": pinned.number if pinned else None}

    @extend_schema_field(
        BudgetLimitsSerializer(help_text="What all its runs together may spend, below the tenant's budgets.")
    )
    def get_budget(self, conversation: Conversation) -> dict[str, Any]:
        usd = conversation.budget_usd
        return {"usd": None if usd is None else f"{usd:f}", "calls": conversation.budget_calls}

    @extend_schema_field(ContextUsageSerializer(allow_null=True, help_text="null: no turn of it has ended yet."))
    def get_context_usage(self, conversation: Conversation) -> dict[str, Any] | None:
        return conversation.context_usage


def skill_names(**kwargs: Any) -> serializers.ListField:
    """A list of skill (or MCP server) names, checked against the tenant's by the service."""
    return serializers.ListField(child=serializers.CharField(max_length=64), max_length=200, **kwargs)


class ConversationCreateSerializer(StrictSerializer):
    title = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    agent = serializers.CharField(
        max_length=140,
        required=False,
        allow_blank=True,
        help_text="An agent profile: `name` follows its current version, `name@version` pins one; omitted: the default.",
    )
    model = serializers.CharField(
        max_length=63, required=False, allow_blank=True, help_text="A model over the agent's; omitted: the agent's."
    )
    user_id = serializers.CharField(
        max_length=USER_ID_MAX_LENGTH,
        required=False,
        allow_blank=True,
        validators=[validate_user_id],
        help_text="Defaults to the X-User-ID header.",
    )
    skills = skill_names(
        required=False,
        allow_null=True,
        help_text="The skills (names) its runs may use; omitted or null: all the tenant's enabled ones.",
    )
    mcp_servers = skill_names(
        required=False,
        allow_null=True,
        help_text="The MCP servers (names) its runs get; omitted or null: all the tenant's enabled ones.",
    )
    budget = BudgetSerializer(
        required=False,
        help_text="Lowers the conversation's budget (all its runs together) below the tenant's default.",
    )


class ConversationUpdateSerializer(StrictModelSerializer):
    agent = serializers.CharField(
        max_length=140,
        required=False,
        help_text="Move it to another agent profile from its next run: `name` or `name@version`.",
    )
    skills = skill_names(
        required=False,
        allow_null=True,
        help_text="The skills (names) its runs may use; null: all the tenant's enabled ones.",
    )
    mcp_servers = skill_names(
        required=False,
        allow_null=True,
        help_text="The MCP servers (names) its runs get; null: all the tenant's enabled ones.",
    )

    class Meta:
        model = Conversation
        fields = ["title", "status", "agent", "skills", "mcp_servers"]

    def update(self, instance: Conversation, validated_data: dict[str, Any]) -> Conversation:
        """Save only what the request changes. A whole-row save would put back what the conversation's run changed
        since the request read it: its event seq (the next events would then reuse taken seqs), its lease, the
        session to resume, a title the run gave it."""
        for name, value in validated_data.items():
            setattr(instance, name, value)
        instance.save(update_fields=[*validated_data, "updated_at"])
        return instance


class MessageCreateSerializer(StrictSerializer):
    text = serializers.CharField(trim_whitespace=False)
    agent = serializers.CharField(
        max_length=140,
        required=False,
        allow_blank=True,
        help_text="Another agent profile for this message only (`name` or `name@version`); omitted: the conversation's.",
    )
    budget = BudgetSerializer(
        required=False,
        help_text="Lowers this run's budget below the tenant's default: USD and/or model calls.",
    )
    skills = skill_names(
        required=False,
        allow_null=True,
        help_text="Narrows the conversation's skills for this message (names); omitted: the conversation's.",
    )
    preferred_skills = skill_names(
        required=False, help_text="Skills (names) added for this message, which the agent is told to use first."
    )
    mcp_servers = skill_names(
        required=False,
        allow_null=True,
        help_text="Narrows the conversation's MCP servers for this message (names); omitted: the conversation's.",
    )
    mcp_tokens = serializers.DictField(
        child=serializers.CharField(max_length=16_000, trim_whitespace=False),
        required=False,
        help_text="Secrets for this run only, by name: MCP headers name them as ${name}. Never stored past the run.",
    )

    def validate_mcp_tokens(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50 or any(not SECRET_NAME.match(name) for name in value):
            raise serializers.ValidationError("Send at most 50 tokens, named with letters, digits, '_', '.' or '-'.")
        return value

    def run_options(self, user_id: str) -> RunOptions:
        """The validated message as `start_run` takes it (with its files, for a multipart one)."""
        return RunOptions.from_message(self.validated_data, user_id=user_id, files=self.validated_data.get("file", ()))

    def validate_text(self, value: str) -> str:
        if problem := message_text_problem(value):
            raise serializers.ValidationError(problem)
        return value


class MessageWithFilesSerializer(MessageCreateSerializer):
    """A message as multipart: its text, the files it brings (each lands in /workspace under its name),
    and the JSON message's options, each a form field holding JSON (`skills`: `["pdf"]`)."""

    file = serializers.ListField(child=serializers.FileField(), required=False, help_text="One or more files.")

    OPTIONS = ("budget", "skills", "preferred_skills", "mcp_servers", "mcp_tokens")

    @classmethod
    def from_form(cls, form: Any, files: Any) -> "MessageWithFilesSerializer":
        """The serializer of a multipart body: `text`, repeated `file`, and options as JSON fields."""
        unknown = sorted((set(form) | set(files)) - {"text", "file", *cls.OPTIONS})
        if unknown:
            allowed = ", ".join(("text", "file", *cls.OPTIONS))
            raise serializers.ValidationError(
                {name: [f"Unknown field. Allowed fields: {allowed}."] for name in unknown}
            )
        data: dict[str, Any] = {"text": form.get("text"), "file": files.getlist("file") or None}
        errors = {}
        for name in cls.OPTIONS:
            if name in form:
                try:
                    data[name] = json.loads(form[name])
                except ValueError:
                    errors[name] = ['Send this field as JSON, as in the JSON message (for skills: ["pdf"]).']
        if errors:
            raise serializers.ValidationError(errors)
        return cls(data={name: value for name, value in data.items() if value is not None})


class RunAgentSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    kind = serializers.CharField(help_text="`agent` or `chat`.")


class RunSerializer(serializers.ModelSerializer):
    """A run. Lists pass `queue` (`runs.services.message_queue` of the conversation) in the context; without it,
    a queued run reads its conversation's queue itself."""

    conversation = serializers.UUIDField(source="conversation_id", read_only=True)
    model = serializers.CharField(source="model_id", read_only=True)
    agent = serializers.SerializerMethodField()
    structured_output = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField()
    steers = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "conversation",
            "agent",
            "model",
            "user_id",
            "input",
            "status",
            "created_at",
            "started_at",
            "finished_at",
            "interrupt_requested_at",
            "result",
            "structured_output",
            "error",
            "queue_position",
            "steers",
        ]
        read_only_fields = fields

    @extend_schema_field(RunAgentSerializer(allow_null=True, help_text="The agent profile version it ran with."))
    def get_agent(self, run: Run) -> dict[str, Any] | None:
        return None if run.agent_version is None else run.agent_version.summary()

    @extend_schema_field(
        serializers.JSONField(
            allow_null=True,
            help_text="The validated object of an agent with an output_schema (also in `result`); null otherwise.",
        )
    )
    def get_structured_output(self, run: Run) -> Any:
        return (run.result or {}).get("structured_output")

    @extend_schema_field(
        serializers.IntegerField(
            allow_null=True,
            help_text="A message waiting behind the conversation's active run: its place in line (1 runs next); "
            "null for any other run.",
        )
    )
    def get_queue_position(self, run: Run) -> int | None:
        return self._queue(run).position(run)

    @extend_schema_field(
        serializers.UUIDField(
            allow_null=True,
            help_text="A message sent to steer the running run (busy policy `steer`): that run's id, until it takes "
            "the message in (`message.steered`) or ends (the message then runs on its own); null otherwise.",
        )
    )
    def get_steers(self, run: Run) -> UUID | None:
        return self._queue(run).steers(run)

    def _queue(self, run: Run) -> MessageQueue:
        if "queue" in self.context:
            queue: MessageQueue = self.context["queue"]
            return queue
        if run.status != Run.Status.QUEUED:
            return MessageQueue({}, {})
        return message_queue(run.conversation)


class MessageAcceptedSerializer(RunSerializer):
    """The answer to a message (202, and the WebSocket's ack): the run that answers it, and what became of it while
    a run was active, as the active run's agent profile says (`busy_policy`)."""

    disposition = serializers.ChoiceField(
        choices=[item.value for item in Disposition],
        help_text="`started`: its run is the active one. `queued`: it waits behind the active run (`behind`) at "
        "`queue_position`, as a run of its own. `steered`: the running run takes it in as its next user input "
        "(`message.steered`); this body is that run. `interrupting`: it stopped the active run and runs right after.",
    )
    message_id = serializers.UUIDField(
        help_text="The run that stores the message (steered: until the running run takes it in; then it is gone, "
        "and `message.steered` names it)."
    )
    behind = serializers.UUIDField(allow_null=True, help_text="The active run it waits behind or steers; null: none.")

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "disposition", "message_id", "behind"]
        read_only_fields = fields

    @classmethod
    def of(cls, sent: Sent) -> dict[str, Any]:
        """The body for an accepted message; its `queue_position` is the message's own place in line."""
        return {**RunSerializer(sent.run).data, **sent.summary()}


class EventSerializer(serializers.ModelSerializer):
    run_id = serializers.UUIDField(read_only=True)
    at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = Event
        fields = ["seq", "type", "run_id", "at", "data"]
        read_only_fields = fields


class EventPageSerializer(serializers.Serializer):
    events = EventSerializer(many=True)
    last_seq = serializers.IntegerField(help_text="The conversation's newest seq.")
    next_after = serializers.IntegerField(help_text="Pass as `after` to read the next page.")
    has_more = serializers.BooleanField()


class EventQuerySerializer(StrictSerializer):
    after = serializers.IntegerField(min_value=0, max_value=MAX_BIGINT, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)


class StreamTokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_in = serializers.IntegerField()
    websocket_path = serializers.CharField()
