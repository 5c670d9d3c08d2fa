"""Operator admin for conversations, runs and events: read-only history, transcripts, a live view."""

import uuid
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from agents.services import run_version
from api.errors import ServiceError
from conversations.events import EventType
from conversations.models import Conversation, Event, Run, RunQuerySet
from conversations.transcripts import TRANSCRIPT_MAX_EVENTS, ContextUsage, build_transcript, pretty_json
from runs import services
from tenants.admin import drop_history_permissions
from tenants.admin_mixins import ReadOnlyAdminMixin
from workspaces.models import WorkspaceFile


def search_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


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
        "agent_label",
        "model",
        "status",
        "active_run_status",
        "events",
        "created_at",
    ]
    list_filter = ["tenant", "status", "model", "created_at"]
    list_select_related = ["tenant", "model", "active_run", "agent", "agent_version"]
    search_fields = ["title", "user_id"]
    search_help_text = "Title or user id, or a conversation's full id."
    uuid_search_fields = ("pk",)
    fields = readonly_fields = (
        "id",
        "title",
        "tenant",
        "user_id",
        "agent_label",
        "model",
        "status",
        "context",
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

    @admin.display(description="agent")
    def agent_label(self, obj: Conversation) -> str:
        if obj.agent is None:
            return "the tenant's default"
        # A pinned version is one of its agent's: no query for its profile.
        return f"{obj.agent.name}@{obj.agent_version.number}" if obj.agent_version else obj.agent.name

    @admin.display(description="context window")
    def context(self, obj: Conversation) -> str:
        usage = ContextUsage.read(obj.context_usage)
        return str(usage) if usage else "—"

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
        # What its next run uses: its agent's version, and the model it names over the agent's (if any).
        agent = run_version(conversation)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Live: {conversation}",
            "conversation": conversation,
            "agent": agent,
            "model": conversation.model or agent.model or conversation.tenant.default_model,
            "unsandboxed": settings.SANDBOX_RUNNER == "unsandboxed",
            "live_config": {
                "websocketPath": f"/ws/tenants/{conversation.tenant_id}/conversations/{conversation.pk}/",
                "conversationId": str(conversation.pk),
            },
            "change_url": reverse("admin:conversations_conversation_change", args=[conversation.pk]),
        }
        return TemplateResponse(request, "conversations/live.html", context)


def sandbox_badge(mode: str | None) -> str:
    if mode == "unsandboxed":
        return format_html('<strong style="color:#fff;background:#c62828;padding:0 .5em">{}</strong>', "NOT SANDBOXED")
    return str(mode or "—")


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
        "sandbox_label",
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
        "sandbox",
        "sandbox_report",
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

    @admin.display(description="sandbox")
    def sandbox_label(self, obj: Run) -> str:
        """In the list: the sandbox its end recorded (no query per row; a run still going shows —)."""
        return sandbox_badge((obj.result or {}).get("sandbox"))

    @admin.display(description="sandbox")
    def sandbox(self, obj: Run) -> str:
        """The run's sandbox as it started (its end records it too)."""
        return sandbox_badge(self._started(obj).get("sandbox") or (obj.result or {}).get("sandbox"))

    @admin.display(description="sandbox report")
    def sandbox_report(self, obj: Run) -> str:
        report = self._started(obj).get("sandbox_report") or (obj.error or {}).get("sandbox_report")
        return format_html("<pre>{}</pre>", pretty_json(report)) if report else "—"

    def _started(self, obj: Run) -> dict[str, Any]:
        event = obj.events.filter(type__in=[EventType.RUN_STARTED, EventType.RUN_RESUMED]).order_by("seq").first()
        return event.data if event is not None and isinstance(event.data, dict) else {}

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
