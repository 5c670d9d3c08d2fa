"""Operator admin for what runs ask people: approvals to allow or deny (one by one on their page, or selected in
the list), the agent's questions, and the tools people allowed for the rest of a conversation.

The rows are the platform's record: nobody edits one. An operator decides through `runs.services`, as REST and
the WebSocket do, which stores the decision's event and audit record (naming the operator) and wakes the run.
"""

import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from api.errors import ServiceError
from approvals.deciders import operator_decider
from approvals.models import Approval, Question, ToolGrant
from conversations.admin import UuidSearchMixin
from conversations.transcripts import pretty_json
from runs import services
from tenants.admin_mixins import ReadOnlyAdminMixin

DECIDE_PERMISSION = "approvals.change_approval"
DECISION_MESSAGE_FIELD = "decision_message"
REQUEST_FIELDS = ("id", "tenant", "conversation", "run", "user_id", "tool_use_id")
SETTLED_FIELDS = ("status", "requested_at", "expires_at", "decided_by_kind", "decided_by", "decided_at", "applied_at")


@admin.register(Approval)
class ApprovalAdmin(UuidSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["tool", "short_title", "tenant", "user_id", "status", "requested_at", "expires_at", "decider"]
    list_filter = ["status", "tool", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["tool", "title", "description", "user_id", "decided_by", "tool_use_id"]
    search_help_text = "Tool, title, user id, decider, or the full id of an approval, its conversation or run."
    uuid_search_fields = ("pk", "conversation_id", "run_id")
    actions = ["allow_selected", "deny_selected"]
    readonly_fields = (
        *REQUEST_FIELDS,
        "tool",
        "title",
        "display_name",
        "description",
        "decision_reason",
        "input_json",
        *SETTLED_FIELDS,
        "message",
        "updated_input_json",
        "remember",
        "decide",
    )

    def get_fields(self, request: HttpRequest, obj: Approval | None = None) -> list[str]:
        fields = [name for name in self.readonly_fields if name != "decide"]
        if obj is not None and obj.is_pending and self.has_decide_permission(request):
            fields.insert(0, "decide")
        return fields

    @admin.display(description="title", ordering="title")
    def short_title(self, obj: Approval) -> str:
        return obj.title if len(obj.title) <= 80 else obj.title[:79] + "…"

    @admin.display(description="decided by", ordering="decided_by")
    def decider(self, obj: Approval) -> str:
        return f"{obj.get_decided_by_kind_display()}: {obj.decided_by}" if obj.decided_by_kind else "—"

    @admin.display(description="input")
    def input_json(self, obj: Approval) -> str:
        return format_html("<pre>{}</pre>", pretty_json(obj.tool_input))

    @admin.display(description="input as edited")
    def updated_input_json(self, obj: Approval) -> str:
        return format_html("<pre>{}</pre>", pretty_json(obj.updated_input)) if obj.updated_input is not None else "—"

    @admin.display(description="decide")
    def decide(self, obj: Approval) -> str:
        # Buttons of the change form posting elsewhere (a form cannot nest in another); the change form carries
        # the CSRF token, and the message box beside them is posted with either.
        return format_html(
            '<textarea name="{}" rows="2" cols="80" placeholder="Words to the model (optional): why you deny, or '
            'what to keep in mind"></textarea><br>'
            '<button type="submit" class="button" formaction="{}" formmethod="post" formnovalidate>Allow</button> '
            '<button type="submit" class="button" formaction="{}" formmethod="post" formnovalidate>Deny</button>',
            DECISION_MESSAGE_FIELD,
            reverse("admin:approvals_approval_allow", args=[obj.pk]),
            reverse("admin:approvals_approval_deny", args=[obj.pk]),
        )

    # --- Deciding, as an operator, through runs.services ----------------------------------------------------

    def has_decide_permission(self, request: HttpRequest) -> bool:
        # The pages are read-only for everyone: deciding needs the model permission itself.
        return request.user.has_perm(DECIDE_PERMISSION)

    @admin.action(description="Allow selected", permissions=["decide"])
    def allow_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        self._decide_each(request, queryset, allow=True)

    @admin.action(description="Deny selected", permissions=["decide"])
    def deny_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        self._decide_each(request, queryset, allow=False)

    def _decide_each(self, request: HttpRequest, queryset: QuerySet[Approval], *, allow: bool) -> None:
        decided = 0
        for approval in queryset.order_by("requested_at"):
            if not approval.is_pending:
                self.message_user(request, f"{approval}: already {approval.status}; left as it was.", messages.WARNING)
                continue
            if self._decided(request, approval, allow=allow, message=""):
                decided += 1
        verb = "Allowed" if allow else "Denied"
        self.message_user(request, f"{verb} {decided} approval(s).", messages.SUCCESS if decided else messages.INFO)

    def _decided(self, request: HttpRequest, approval: Approval, *, allow: bool, message: str) -> bool:
        who = operator_decider(request.user.get_username())
        try:
            services.decide_approval(approval, who, allow=allow, message=message)
        except ServiceError as refusal:
            self.message_user(request, f"{approval}: {refusal.message}", messages.ERROR)
            return False
        self.log_change(request, approval, "Allowed" if allow else "Denied")
        return True

    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: their catch-all `<path:object_id>/` would swallow them.
        return [
            path(
                "<uuid:object_id>/allow/",
                self.admin_site.admin_view(require_POST(self.allow_view)),
                name="approvals_approval_allow",
            ),
            path(
                "<uuid:object_id>/deny/",
                self.admin_site.admin_view(require_POST(self.deny_view)),
                name="approvals_approval_deny",
            ),
            *super().get_urls(),
        ]

    def allow_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        return self._decide_view(request, object_id, allow=True)

    def deny_view(self, request: HttpRequest, object_id: uuid.UUID) -> HttpResponse:
        return self._decide_view(request, object_id, allow=False)

    def _decide_view(self, request: HttpRequest, object_id: uuid.UUID, *, allow: bool) -> HttpResponse:
        approval = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_decide_permission(request):
            raise PermissionDenied
        message = str(request.POST.get(DECISION_MESSAGE_FIELD, "")).replace("\r\n", "\n").strip()
        if self._decided(request, approval, allow=allow, message=message):
            self.message_user(request, f"{'Allowed' if allow else 'Denied'}: {approval.title}", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:approvals_approval_change", args=[approval.pk]))


@admin.register(Question)
class QuestionAdmin(UuidSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    # The agent asks its end user; their answer comes from the chat page, REST or the WebSocket, not from here.
    list_display = ["first_question", "tenant", "user_id", "status", "requested_at", "expires_at", "decided_by"]
    list_filter = ["status", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["user_id", "decided_by", "tool_use_id"]
    search_help_text = "User id, decider, or the full id of a question, its conversation or run."
    uuid_search_fields = ("pk", "conversation_id", "run_id")
    fields = readonly_fields = (*REQUEST_FIELDS, "questions_json", *SETTLED_FIELDS, "answers_json")

    @admin.display(description="question")
    def first_question(self, obj: Question) -> str:
        return str(obj)

    @admin.display(description="questions")
    def questions_json(self, obj: Question) -> str:
        return format_html("<pre>{}</pre>", pretty_json(obj.questions))

    @admin.display(description="answers")
    def answers_json(self, obj: Question) -> str:
        return format_html("<pre>{}</pre>", pretty_json(obj.answers)) if obj.answers is not None else "—"


@admin.register(ToolGrant)
class ToolGrantAdmin(UuidSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Tools a person allowed for the rest of a conversation ("remember"), each with the approval that did."""

    list_display = ["tool", "conversation", "approval", "created_at"]
    list_select_related = ["conversation", "approval"]
    search_fields = ["tool"]
    search_help_text = "Tool, or the full id of a conversation."
    uuid_search_fields = ("conversation_id",)
    fields = readonly_fields = ("conversation", "tool", "approval", "created_at")
