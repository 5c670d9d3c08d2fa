"""Operator admin for agent profiles: the current version's fields edited as a form, each save that changes
them stored as a new version by agents.services, versions listed read-only with a rollback button."""

import json
from dataclasses import asdict, fields
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from agents import services
from agents.models import AgentProfile, AgentVersion
from agents.spec import AgentSpec
from api.errors import ServiceError
from conversations.models import Conversation
from tenants.admin import count_of
from tenants.admin_mixins import ReadOnlyAdminMixin, make_current_button
from tenants.models import Tenant

VERSION_FIELDS = [spec_field.name for spec_field in fields(AgentSpec)]
PROFILE_FIELDS = ["description", "choosable", "is_default"]
# An empty box is null: all skills, all servers, the tenant's egress allow-list as is, a free-text answer.
NULLABLE_JSON = {"skills", "mcp_servers", "egress_allowlist", "output_schema"}

JSON_HELP = {
    "allowed_tools": 'A JSON list of tool patterns the agent may use, e.g. ["Read", "Grep", "Bash(git *)", '
    '"WebFetch(domain:*.example.com)", "mcp__github"]. Empty: every tool.',
    "disallowed_tools": 'A JSON list of tool patterns the agent may never use, e.g. ["Bash(rm *)", "WebFetch"]; '
    "they win over the allowed tools.",
    "permission_rules": 'A JSON list of rules, e.g. [{"pattern": "Bash(git push *)", "action": "ask"}], each action '
    "allow, ask or deny (deny wins over ask, ask over allow). A call an ask rule matches waits for a person's "
    "decision (Approvals and questions › Approvals), at most the approval timeout, then is denied by itself.",
    "skills": 'A JSON list of the tenant\'s enabled skills its runs get, e.g. ["pdf", "csv-report"]; [] for none. '
    "null (or empty): all of them.",
    "mcp_servers": 'A JSON list of the tenant\'s MCP servers its runs get, e.g. ["github"]; [] for none. '
    "null (or empty): all of them.",
    "egress_allowlist": "A JSON list of where its runs' sandboxes may connect, narrowing the tenant's egress "
    'allow-list (a connection must pass both), e.g. ["api.github.com", "*.pypi.org", "10.1.0.0/16:5432"]; [] for '
    "nowhere. null (or empty): the tenant's list as is. Without a port, 80 and 443; :* for any port.",
    "subagents": 'A JSON list of agents it may hand work to, e.g. [{"name": "reviewer", "description": "Reviews '
    'diffs.", "prompt": "You review code.", "tools": ["Read", "Grep"], "model": null}]; tools and model are '
    "optional (null: the agent's).",
    "output_schema": 'A JSON Schema the final answer must fit, e.g. {"type": "object", "properties": {"total": '
    '{"type": "number"}}, "required": ["total"]}. null (or empty): a free-text answer.',
}
# Service refusals without a field of their own, by code: where the form shows them.
FIELD_OF_CONFLICT = {"agent_exists": "name", "default_agent": "is_default"}


def version_form_fields() -> dict[str, forms.Field]:
    """The form fields of a version, from AgentVersion's columns: labels, choices, bounds, help."""
    form_fields: dict[str, forms.Field] = forms.fields_for_model(
        AgentVersion, fields=VERSION_FIELDS, help_texts=JSON_HELP
    )
    for form_field in form_fields.values():
        form_field.show_hidden_initial = False  # the callable defaults (list) would add hidden inputs
        if isinstance(form_field, forms.JSONField):
            form_field.widget = forms.Textarea(attrs={"rows": 3, "cols": 100, "spellcheck": "false"})
    instructions = form_fields["instructions"]
    assert isinstance(instructions, forms.CharField)
    instructions.strip = False  # leading and trailing blanks are the operator's, as they are over REST
    instructions.widget = forms.Textarea(attrs={"rows": 12, "cols": 100})
    form_fields["mcp_servers"].label = "MCP servers"
    return form_fields


class AgentProfileForm(forms.ModelForm):
    """Every field is the form's own, none is copied onto the instance: clean() stores the profile through
    agents.services, whose refusals land on the field they name (as on the skills' forms, storing is the
    last check: a name taken meanwhile, the one default)."""

    created_by = ""  # set per request by AgentProfileAdmin.get_form
    new_version: AgentVersion | None = None

    class Meta:
        model = AgentProfile
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields.update(version_form_fields())
        version = self.instance.current_version if self.instance.pk else None
        spec = AgentSpec.of(version) if version is not None else AgentSpec()
        for name in VERSION_FIELDS:
            value = getattr(spec, name)
            self.initial.setdefault(name, list(value) if isinstance(value, tuple) else value)

    def clean_instructions(self) -> str:
        # Browsers send a textarea's lines with CRLF: saved unchanged, the text must stay the same version.
        return str(self.cleaned_data["instructions"]).replace("\r\n", "\n")

    def spec_changes(self) -> dict[str, Any]:
        changes = {name: self.cleaned_data[name] for name in VERSION_FIELDS}
        for name in ("model", "fallback_model"):
            changes[name] = changes[name].pk if changes[name] is not None else None
        for name, value in changes.items():
            if value is None and isinstance(self.fields[name], forms.JSONField) and name not in NULLABLE_JSON:
                changes[name] = []  # an empty box
        return changes

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors:
            try:
                self.store()
            except ServiceError as problem:
                self.show(problem)
        return cleaned

    def store(self) -> None:
        raise NotImplementedError

    def show(self, problem: ServiceError) -> None:
        """A refusal on the fields it names (check_spec names one), or on the field its code is about."""
        for name, errors in (problem.fields or {FIELD_OF_CONFLICT.get(problem.code, ""): [problem.message]}).items():
            for error in errors:
                self.add_error(name if name in self.fields else None, error)

    def save(self, commit: bool = True) -> AgentProfile:
        assert not self.errors, "save() of an invalid form"
        return self.instance  # stored by clean()

    def save_m2m(self) -> None:
        """Nothing to save: the form sets no many-to-many field."""


class AgentProfileAddForm(AgentProfileForm):
    tenant = forms.ModelChoiceField(Tenant.objects.all())
    name = forms.CharField(max_length=63, help_text="Unique in the tenant: lowercase letters, digits and hyphens.")
    description = forms.CharField(max_length=1000, required=False)
    choosable = forms.BooleanField(required=False, help_text="End users may pick it in the chat page.")
    is_default = forms.BooleanField(
        required=False,
        help_text="Conversations that name no agent get it; the tenant's current default stops being it.",
    )

    def store(self) -> None:
        data = self.cleaned_data
        self.instance = services.create_profile(
            data["tenant"],
            data["name"],
            AgentSpec().changed(self.spec_changes()),
            description=data["description"],
            choosable=data["choosable"],
            is_default=data["is_default"],
            created_by=self.created_by,
        )


class AgentProfileChangeForm(AgentProfileForm):
    description = forms.CharField(max_length=1000, required=False)
    choosable = forms.BooleanField(required=False, help_text="End users may pick it in the chat page.")
    is_default = forms.BooleanField(
        required=False,
        help_text="Conversations that name no agent get it. A tenant always has one: to change it, make another "
        "profile the default.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in PROFILE_FIELDS:
            self.initial.setdefault(name, getattr(self.instance, name))

    def store(self) -> None:
        data = self.cleaned_data
        before = self.instance.current_version_id
        services.update_profile(
            self.instance,
            self.spec_changes(),
            description=data["description"],
            choosable=data["choosable"],
            is_default=data["is_default"],
            created_by=self.created_by,
        )
        if self.instance.current_version_id != before:
            self.new_version = self.instance.current_version


class AgentVersionInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Every version, newest first, as it was made; each other one a rollback away."""

    model = AgentVersion
    fk_name = "profile"
    extra = 0
    fields = readonly_fields = ("number", "kind", "model", "summary", "created_by", "created_at", "make_current")

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentVersion]:
        return super().get_queryset(request).select_related("profile")

    @admin.display(description="what it sets")
    def summary(self, obj: AgentVersion) -> str:
        defaults = asdict(AgentSpec())
        shown = {
            name: value
            for name, value in asdict(AgentSpec.of(obj)).items()
            # [] is the default of the list fields, read back; a null-default field's [] says something ("none").
            if name not in {"kind", "model", "instructions"}
            and value != defaults[name]
            and not (value == [] and defaults[name] == ())
        }
        instructions = (obj.instructions.splitlines() or ["(no instructions)"])[0][:80]
        settings = "\n".join(f"{name}: {json.dumps(value, default=str)}" for name, value in shown.items())
        return format_html("<details><summary>{}</summary><pre>{}</pre></details>", instructions, settings)

    @admin.display(description="current")
    def make_current(self, obj: AgentVersion) -> str:
        if obj.profile.current_version_id == obj.pk:
            return "current"
        return make_current_button(reverse("admin:agents_agentprofile_make_current", args=[obj.profile_id, obj.number]))


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    form = AgentProfileChangeForm
    list_display = [
        "name",
        "tenant",
        "is_default",
        "choosable",
        "version",
        "version_kind",
        "runs_on",
        "conversation_count",
    ]
    list_filter = ["tenant", "is_default", "choosable", "current_version__kind"]
    list_select_related = ["tenant", "current_version"]
    search_fields = ["name", "description", "tenant__id", "tenant__name"]
    inlines = [AgentVersionInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentProfile]:
        return super().get_queryset(request).annotate(conversation_count=count_of(Conversation.objects.all(), "agent"))

    @admin.display(description="version", ordering="current_version__number")
    def version(self, obj: AgentProfile) -> int | None:
        return obj.current_version.number if obj.current_version else None

    @admin.display(description="kind", ordering="current_version__kind")
    def version_kind(self, obj: AgentProfile) -> str:
        return obj.current_version.get_kind_display() if obj.current_version else "-"

    @admin.display(description="model", ordering="current_version__model")
    def runs_on(self, obj: AgentProfile) -> str:
        version = obj.current_version
        if version is None:
            return "-"
        return version.model_id or f"tenant's default ({obj.tenant.default_model_id})"

    @admin.display(description="conversations", ordering="conversation_count")
    def conversation_count(self, obj: AgentProfile) -> int:
        return obj.conversation_count  # type: ignore[attr-defined]

    def get_fieldsets(self, request: HttpRequest, obj: AgentProfile | None = None) -> Any:
        profile = (None, {"fields": ["tenant", "name", *PROFILE_FIELDS]})
        if obj is not None and not self.has_change_permission(request, obj):
            return [profile]  # a viewer reads the versions below
        number = obj.current_version.number if obj is not None and obj.current_version else 1
        return [
            profile,
            (
                f"Version {number}",
                {
                    "fields": ["kind", "instructions", "prompt_scope"],
                    "description": "Saving with any field of the version changed stores it as the next version and "
                    "makes that current: versions never change, and conversations pinned to one keep it.",
                },
            ),
            ("Model", {"fields": ["model", "fallback_model", "effort", "thinking_budget"]}),
            ("Limits", {"fields": ["max_turns", "run_budget_usd", "run_budget_calls"]}),
            ("Tools", {"fields": ["allowed_tools", "disallowed_tools", "permission_rules"]}),
            ("People in the loop", {"fields": ["approval_timeout_seconds", "busy_policy"]}),
            ("Skills and MCP servers", {"fields": ["skills", "mcp_servers"]}),
            (
                "Network",
                {
                    "fields": ["egress_allowlist"],
                    "description": "Where its runs' sandboxes may connect, through the run's egress proxy: within the "
                    "tenant's egress allow-list (Tenants), never beyond it.",
                },
            ),
            ("Subagents and structured output", {"fields": ["subagents", "output_schema"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: AgentProfile | None = None) -> list[str]:
        return [] if obj is None else ["tenant", "name"]

    def get_inlines(self, request: HttpRequest, obj: AgentProfile | None) -> list[Any]:
        return [] if obj is None else [AgentVersionInline]

    def get_form(
        self, request: HttpRequest, obj: AgentProfile | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        # The forms declare their own fields (no modelform_factory): the services store them, not ModelForm.
        base = AgentProfileChangeForm if obj is not None else AgentProfileAddForm
        return type(base.__name__, (base,), {"created_by": f"operator:{request.user.get_username()}"})

    def save_model(self, request: HttpRequest, obj: AgentProfile, form: forms.ModelForm, change: bool) -> None:
        # Stored by the form's clean(), through agents.services.
        version = getattr(form, "new_version", None)
        if version is not None:
            self.message_user(request, f"Stored version {version.number}; it is now current.", messages.SUCCESS)
        elif change and set(form.changed_data) & set(VERSION_FIELDS):
            self.message_user(request, "The version fields are as they were: no new version.", messages.INFO)

    # --- Deleting through agents.services -----------------------------------------------------------------

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        # One at a time, through delete_profile: the bulk action would delete the default and report them all.
        actions.pop("delete_selected", None)
        return actions

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> Any:
        profile = self.get_object(request, unquote(object_id))
        if profile is not None and self.has_delete_permission(request, profile):
            try:
                services.check_deletable(profile)
            except ServiceError as refusal:
                self.message_user(request, refusal.message, messages.ERROR)
                return HttpResponseRedirect(reverse("admin:agents_agentprofile_change", args=[profile.pk]))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request: HttpRequest, obj: AgentProfile) -> None:
        services.delete_profile(obj)

    # --- Versions: make current ---------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        make_current = self.admin_site.admin_view(require_POST(self.make_current_view))
        # Before the defaults: their catch-all `<path:object_id>/` would swallow it.
        return [
            path(
                "<int:object_id>/versions/<int:number>/make-current/",
                make_current,
                name="agents_agentprofile_make_current",
            ),
            *super().get_urls(),
        ]

    def make_current_view(self, request: HttpRequest, object_id: int, number: int) -> HttpResponse:
        profile = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_change_permission(request, profile):
            raise PermissionDenied
        get_object_or_404(profile.versions.all(), number=number)
        services.make_current(profile, number)
        message = f"Made version {number} current."
        self.log_change(request, profile, message)
        self.message_user(request, f"{profile}: {message}", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:agents_agentprofile_change", args=[profile.pk]))
