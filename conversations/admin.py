"""Operator admin for conversations, runs and events: read-only history, transcripts, a live view."""

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from api.errors import ServiceError
from conversations.events import TERMINAL_EVENT_TYPES, EventType
from conversations.models import Conversation, Event, Run, RunQuerySet
from runs import services
from tenants.admin import drop_history_permissions
from tenants.admin_mixins import ReadOnlyAdminMixin
from tenants.models import TOKEN_KINDS
from workspaces.models import WorkspaceFile

# The newest events a change page renders; a long agent run easily stores tens of thousands.
TRANSCRIPT_MAX_EVENTS = 2000
# Token-level copies of the `message` events that follow them: noise in a transcript.
TRANSCRIPT_SKIPPED_TYPES = (EventType.MESSAGE_DELTA,)
TERMINAL_STATUS: dict[str, str] = {event_type: status for status, event_type in TERMINAL_EVENT_TYPES.items()}


def search_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@dataclass
class TranscriptItem:
    """One line of a transcript; `kind` picks how the template draws it (as conversations/events.js
    draws the same event on the live page)."""

    kind: str
    event: Event
    data: dict[str, Any]
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    result: "TranscriptItem | None" = None  # a tool call's result, drawn inside it


@dataclass
class RunTranscript:
    run: Run
    user_text: str  # as the user typed it (the agent read it with the attachments' paths added)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    items: list[TranscriptItem] = field(default_factory=list)
    offline_model: bool = False


@dataclass
class Transcript:
    runs: list[RunTranscript]
    shown: int
    total: int
    before: int | None
    earlier_before: int | None


def tool_label(block: dict[str, Any]) -> str:
    """What a tool call is about, in a few words (as events.js labels it on the live page)."""
    tool_input = block.get("input")
    if not isinstance(tool_input, dict):
        return ""
    for key in ("command", "file_path", "path", "pattern", "description"):
        if tool_input.get(key):
            return str(tool_input[key])[:120]
    return ""


def transcript_item(event: Event) -> TranscriptItem | None:
    """The transcript line for one stored event, or None for events the transcript leaves out."""
    data = event.data if isinstance(event.data, dict) else {"value": event.data}
    if event.type == EventType.MESSAGE:
        block = data.get("block")
        if not isinstance(block, dict):
            block = {}
        block_type = block.get("type")
        if block_type == "text":
            return TranscriptItem("text", event, data, text=str(block.get("text", "")))
        if block_type == "thinking":
            return TranscriptItem("thinking", event, data, text=str(block.get("thinking", "")))
        if block_type == "tool_use":
            return TranscriptItem(
                "tool_use",
                event,
                data,
                text=pretty_json(block.get("input")),
                extra={"name": block.get("name", "?"), "id": block.get("id", ""), "label": tool_label(block)},
            )
        return TranscriptItem("other", event, data, text=pretty_json(data))
    if event.type == EventType.TOOL_RESULT:
        content = data.get("content")
        return TranscriptItem(
            "tool_result",
            event,
            data,
            text=content if isinstance(content, str) else pretty_json(content),
            extra={"is_error": bool(data.get("is_error")), "truncated": bool(data.get("truncated"))},
        )
    if event.type == EventType.USAGE:
        tokens = {key.removesuffix("_tokens").replace("_", " "): data.get(key, 0) for key in TOKEN_KINDS}
        return TranscriptItem("usage", event, data, extra={"tokens": tokens, "cost_usd": data.get("cost_usd")})
    if event.type in TERMINAL_STATUS:
        error = data.get("error")
        if not isinstance(error, dict):
            error = {}
        return TranscriptItem(
            "terminal",
            event,
            data,
            text=str(error.get("message") or data.get("message") or ""),
            extra={"status": TERMINAL_STATUS[event.type]},
        )
    if event.type == EventType.RUN_STARTED:
        return TranscriptItem("started", event, data)
    if event.type == EventType.MESSAGE_ERROR:
        return TranscriptItem("message_error", event, data, text=str(data.get("error", "")))
    if event.type == EventType.RUN_QUEUED:
        return None
    return TranscriptItem("other", event, data, text=pretty_json(data))


def build_transcript(conversation: Conversation, before: int | None = None) -> Transcript:
    """The conversation's stored events as runs of transcript lines, newest TRANSCRIPT_MAX_EVENTS only."""
    events_qs = Event.objects.filter(conversation=conversation).exclude(type__in=TRANSCRIPT_SKIPPED_TYPES)
    total = events_qs.count()
    window = events_qs.filter(seq__lt=before) if before else events_qs
    events = list(reversed(window.order_by("-seq")[:TRANSCRIPT_MAX_EVENTS]))
    runs = Run.objects.in_bulk({event.run_id for event in events})
    transcripts: list[RunTranscript] = []
    tool_calls: dict[str, TranscriptItem] = {}
    for event in events:
        if not transcripts or transcripts[-1].run.pk != event.run_id:
            run = runs[event.run_id]
            transcripts.append(RunTranscript(run=run, user_text=run.input))
        current = transcripts[-1]
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == EventType.RUN_QUEUED:
            current.user_text = str(data.get("text", data.get("input", current.user_text)))
            current.attachments = [file for file in data.get("attachments") or [] if isinstance(file, dict)]
        if event.type == EventType.RUN_STARTED:
            current.offline_model = bool(data.get("offline_model"))
        item = transcript_item(event)
        if item is None:
            continue
        if item.kind == "tool_use":
            tool_calls[item.extra["id"]] = item
        elif item.kind == "tool_result" and (call := tool_calls.get(str(data.get("tool_use_id")))) is not None:
            call.result = item
            continue
        elif item.kind == "message_error" and (failed := data.get("message_id")):
            # The CLI's own words for a failed model call; the run's end says what went wrong.
            current.items = [kept for kept in current.items if kept.data.get("message_id") != failed]
        current.items.append(item)
    earlier = events[0].seq if events and window.filter(seq__lt=events[0].seq).exists() else None
    return Transcript(runs=transcripts, shown=len(events), total=total, before=before, earlier_before=earlier)


class UuidSearchMixin:
    """Adds search by exact UUID, which the admin's `icontains` search cannot do on a UUID column."""

    uuid_search_fields: tuple[str, ...] = ()

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)  # type: ignore[misc]
        term_uuid = search_uuid(search_term) if search_term else None
        if term_uuid is not None:
            for lookup in self.uuid_search_fields:
                results = results | queryset.filter(**{lookup: term_uuid})
        return results, may_have_duplicates


@admin.register(Conversation)
class ConversationAdmin(UuidSearchMixin, admin.ModelAdmin):
    list_display = [
        "label",
        "tenant",
        "user_id",
        "model",
        "status",
        "active_run_status",
        "events",
        "created_at",
    ]
    list_filter = ["tenant", "status", "model", "created_at"]
    list_select_related = ["tenant", "model", "active_run"]
    search_fields = ["title", "user_id"]
    search_help_text = "Title or user id, or a conversation's full id."
    uuid_search_fields = ("pk",)
    fields = readonly_fields = (
        "id",
        "title",
        "tenant",
        "user_id",
        "model",
        "status",
        "active_run",
        "last_seq",
        "sdk_session_id",
        "files",
        "created_at",
        "updated_at",
    )

    @admin.display(description="files")
    def files(self, obj: Conversation) -> str:
        changelist = reverse("admin:workspaces_workspacefile_changelist")
        return format_html(
            '<a href="{}?q={}">{} file version(s)</a>',
            changelist,
            obj.pk,
            WorkspaceFile.objects.filter(conversation=obj).count(),
        )

    @admin.display(description="conversation", ordering="title")
    def label(self, obj: Conversation) -> str:
        short_id = str(obj.pk)[:8]
        return f"{short_id} · {obj.title}" if obj.title else short_id

    @admin.display(description="active run")
    def active_run_status(self, obj: Conversation) -> str:
        return obj.active_run.status if obj.active_run else "—"

    @admin.display(description="events", ordering="last_seq")
    def events(self, obj: Conversation) -> int:
        return obj.last_seq

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Conversations start through the API, where the tenant's rules (status, model) apply.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        if obj is not None and obj.active_run_id is not None:
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, set[str], Any]:
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, drop_history_permissions(perms_needed), protected

    def delete_model(self, request: HttpRequest, obj: Conversation) -> None:
        # Checked again under the service's lock: a run could have started since the page was shown.
        try:
            services.delete_conversation(obj)
        except ServiceError as exc:
            raise PermissionDenied(exc.message) from exc

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        _, kept = services.delete_conversations(queryset)
        if kept:
            self.message_user(
                request,
                f"Kept {kept} conversation(s) with an active run; interrupt them first.",
                messages.WARNING,
            )

    def get_urls(self) -> list[URLPattern]:
        live = path(
            "<uuid:object_id>/live/",
            self.admin_site.admin_view(self.live_view),
            name="conversations_conversation_live",
        )
        # Before the defaults: their catch-all `<path:object_id>/` would swallow it.
        return [live, *super().get_urls()]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Conversation | None = None,
    ) -> HttpResponse:
        if obj is not None:
            try:
                before = int(request.GET.get("transcript_before", "")) or None
            except ValueError:
                before = None
            context["transcript"] = build_transcript(obj, before=before)
            context["transcript_max_events"] = TRANSCRIPT_MAX_EVENTS
            context["live_url"] = reverse("admin:conversations_conversation_live", args=[obj.pk])
        return super().render_change_form(request, context, add, change, form_url, obj)

    def live_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        """A page that follows the conversation over its WebSocket, where staff may also steer it."""
        conversation = get_object_or_404(
            Conversation.objects.select_related("tenant", "model", "active_run"), pk=object_id
        )
        if not self.has_view_permission(request, conversation):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Live: {conversation}",
            "conversation": conversation,
            "model": conversation.model,
            "live_config": {
                "websocketPath": f"/ws/tenants/{conversation.tenant_id}/conversations/{conversation.pk}/",
                "conversationId": str(conversation.pk),
            },
            "change_url": reverse("admin:conversations_conversation_change", args=[conversation.pk]),
        }
        return TemplateResponse(request, "conversations/live.html", context)


@admin.register(Run)
class RunAdmin(UuidSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    # Read-only: a run's events are part of its conversation's gap-free seq; delete the conversation instead.
    list_display = [
        "id",
        "conversation",
        "tenant",
        "status",
        "model",
        "user_id",
        "created_at",
        "duration",
        "worker",
    ]
    list_filter = ["status", "model", "conversation__tenant"]
    list_select_related = ["conversation__tenant", "model"]
    search_fields = ["user_id"]
    search_help_text = "User id, or the full id of a run or its conversation."
    uuid_search_fields = ("pk", "conversation_id")
    actions = ["interrupt_runs"]
    fields = readonly_fields = (
        "id",
        "conversation",
        "tenant",
        "model",
        "status",
        "user_id",
        "input",
        "worker",
        "created_at",
        "started_at",
        "heartbeat_at",
        "interrupt_requested_at",
        "finished_at",
        "duration",
        "result_json",
        "error_json",
    )

    @admin.display(description="tenant", ordering="conversation__tenant")
    def tenant(self, obj: Run) -> str:
        return str(obj.conversation.tenant)

    @admin.display(description="duration")
    def duration(self, obj: Run) -> str:
        seconds = obj.duration_seconds
        return "—" if seconds is None else f"{seconds:.1f} s"

    @admin.display(description="result")
    def result_json(self, obj: Run) -> str:
        return format_html("<pre>{}</pre>", pretty_json(obj.result)) if obj.result is not None else "—"

    @admin.display(description="error")
    def error_json(self, obj: Run) -> str:
        return format_html("<pre>{}</pre>", pretty_json(obj.error)) if obj.error is not None else "—"

    def has_interrupt_permission(self, request: HttpRequest) -> bool:
        # The pages are read-only for everyone, so interrupting needs the model permission itself.
        return request.user.has_perm("conversations.change_run")

    @admin.action(description="Interrupt selected runs", permissions=["interrupt"])
    def interrupt_runs(self, request: HttpRequest, queryset: RunQuerySet) -> None:
        interrupted = 0
        for run in queryset.unfinished().select_related("conversation"):
            if run.conversation.active_run_id != run.pk:
                self.message_user(request, f"Run {run.pk} is not its conversation's active run.", messages.WARNING)
                continue
            try:
                services.interrupt_run(run.conversation)
            except ServiceError as exc:
                self.message_user(request, f"Run {run.pk}: {exc.message}", messages.ERROR)
                continue
            interrupted += 1
        self.message_user(request, f"Asked {interrupted} run(s) to stop.", messages.SUCCESS)


class EventTypeFilter(admin.SimpleListFilter):
    # A fixed list: the default filter would SELECT DISTINCT over the largest table in the database.
    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(event_type, event_type) for event_type in EventType]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        return queryset.filter(type=self.value()) if self.value() else queryset


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["conversation", "seq", "type", "run", "created_at"]
    list_filter = [EventTypeFilter]
    list_select_related = ["conversation", "run"]
    # Searched by exact conversation id only (get_search_results): `icontains` on a huge table scans it.
    search_fields = ["conversation__id"]
    search_help_text = "The conversation's full id."
    # Newest first by the primary key's index; counting the whole table for the paginator's
    # "N total" would scan it.
    ordering = ["-pk"]
    show_full_result_count = False
    fields = readonly_fields = ("conversation", "run", "seq", "type", "created_at", "data_json")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Event], search_term: str
    ) -> tuple[QuerySet[Event], bool]:
        if not search_term:
            return queryset, False
        term_uuid = search_uuid(search_term)
        if term_uuid is None:
            return queryset.none(), False
        return queryset.filter(conversation_id=term_uuid), False

    @admin.display(description="data")
    def data_json(self, obj: Event) -> str:
        return format_html("<pre>{}</pre>", pretty_json(obj.data))
