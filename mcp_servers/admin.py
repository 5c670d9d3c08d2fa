"""Operator admin for MCP servers and the secrets vault: header values and secret values are written, never shown."""

import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from mcp_servers import services, vault
from mcp_servers.models import SECRET_REFERENCE, McpServer, Secret
from mcp_servers.probe import probe
from tenants.models import Tenant

# What each kind of server reads besides its name, description and allowed tools (services.check_server
# refuses the others), so a change form shows only these: a server's kind never changes.
KIND_FIELDS = {
    McpServer.Kind.HTTP: ["url", "headers"],
    McpServer.Kind.SSE: ["url", "headers"],
    McpServer.Kind.STDIO: ["command", "args"],
    McpServer.Kind.BUILTIN: [],
    McpServer.Kind.OPENAPI: ["openapi_document", "base_url", "headers"],
}
PLATFORM_FIELDS = ["all_tenants", "granted_to"]
# What check_server reads; the fields a form does not show come from the stored server.
CHECKED_FIELDS = ["name", "kind", "allowed_tools", "url", "headers", "command", "args", "openapi_document", "base_url"]
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
REMOVE_ALL = "-"


def owner_of(obj: McpServer | Secret) -> str:
    return "platform" if obj.tenant is None else f"{obj.tenant} ({obj.tenant_id})"


class PlatformFilter(admin.SimpleListFilter):
    title = "platform"
    parameter_name = "platform"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Platform servers"), ("no", "Tenants' own servers")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[McpServer]) -> QuerySet[McpServer]:
        if self.value() == "yes":
            return queryset.filter(tenant__isnull=True)
        if self.value() == "no":
            return queryset.filter(tenant__isnull=False)
        return queryset


# --- MCP servers ----------------------------------------------------------------------------------


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that renders empty whatever it holds: stored header values, and those just posted with
    an error elsewhere, never reach a page (like PasswordInput with render_value=False)."""

    def format_value(self, value: Any) -> None:
        return None


class LinesField(forms.CharField):
    """A list of strings, one a line; blank lines are dropped."""

    widget = forms.Textarea(attrs={"rows": 4})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


class HeadersField(forms.Field):
    """`Name: value` lines to a dict; None when left empty (keep what is stored), {} for `-` (remove all)."""

    widget = WriteOnlyTextarea(attrs={"rows": 4})

    def to_python(self, value: Any) -> dict[str, str] | None:
        text = (value or "").strip()
        if not text:
            return None
        if text == REMOVE_ALL:
            return {}
        headers: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            name, colon, header_value = line.partition(":")
            name = name.strip()
            # The error names the line and the header, never the value: a form error is rendered.
            if not colon or not HEADER_NAME.match(name):
                raise ValidationError(f"Line {number}: write `Name: value`, the name without spaces.")
            if name.lower() in (known.lower() for known in headers):
                raise ValidationError(f"Line {number}: {name} is set twice.")
            headers[name] = header_value.strip()
        return headers

    def has_changed(self, initial: Any, data: Any) -> bool:
        return bool((data or "").strip())  # empty keeps the stored headers


def https_by_default(db_field: models.Field, **kwargs: Any) -> forms.Field | None:
    """A URL typed without a scheme means https, as Django 6 will read it (and no warning until then)."""
    if isinstance(db_field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return db_field.formfield(**kwargs)


class McpServerForm(forms.ModelForm):
    allowed_tools = LinesField(required=False, help_text="Tool names the agent may call, one a line; empty = all.")
    args = LinesField(required=False, help_text="stdio: its arguments, one a line.")
    headers = HeadersField(
        required=False,
        help_text=mark_safe(
            "http, sse, openapi: one <code>Name: value</code> a line, sent with every call; values may name "
            "secrets as <code>${name}</code>. Never shown again."
        ),
    )

    class Meta:
        model = McpServer
        fields = [
            "tenant",
            "name",
            "kind",
            "description",
            "enabled",
            "allowed_tools",
            "url",
            "headers",
            "command",
            "args",
            "openapi_document",
            "base_url",
            *PLATFORM_FIELDS,
        ]
        formfield_callback = https_by_default
        labels = {"url": "URL", "openapi_document": "OpenAPI document", "base_url": "Base URL"}
        # Admin help texts are HTML: the model's own would lose its <name> and <tool>.
        help_texts = {"name": format_html("Its tools reach the agent as {}.", "mcp__<name>__<tool>")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            return
        # A stored server's kind is fixed: its form edits only what that kind reads, and check_server
        # sees the rest as stored.
        used = KIND_FIELDS[McpServer.Kind(self.instance.kind)]
        for field in {name for fields in KIND_FIELDS.values() for name in fields} - set(used):
            self.fields.pop(field, None)
        if "headers" in self.fields:
            self.fields["headers"].help_text = header_help(sorted(self.instance.headers))

    def clean_headers(self) -> dict[str, str]:
        headers: dict[str, str] | None = self.cleaned_data.get("headers")
        return self.instance.headers if headers is None else headers  # empty keeps them ({} on the add form)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "tenant" in self.fields and cleaned.get("tenant") is not None:
            for field in PLATFORM_FIELDS:
                if cleaned.get(field):
                    self.add_error(field, "Only a platform server (Tenant empty) is granted to tenants.")
        if "name" in self.fields and not self.errors:
            self.refuse_a_taken_name(cleaned.get("tenant"), cleaned["name"])
        if not self.errors:
            # Before the server is saved, and without dialing: check_server resolves no names.
            server = McpServer(
                **{
                    field: cleaned[field] if field in self.fields else getattr(self.instance, field)
                    for field in CHECKED_FIELDS
                }
            )
            try:
                services.check_server(server)
            except services.ServerProblem as problem:
                self.add_error(problem.field if problem.field in self.fields else None, str(problem))
        return cleaned

    def refuse_a_taken_name(self, tenant: Tenant | None, name: str) -> None:
        # The unique constraints would refuse it too, the platform's one in words of its own name.
        if McpServer.objects.filter(tenant=tenant, name=name).exists():
            whose = "The platform" if tenant is None else f"Tenant {tenant.pk!r}"
            self.add_error("name", f"{whose} already has an MCP server named {name!r}.")

    def full_clean(self) -> None:
        super().full_clean()
        # Entered headers are not shown back, and an empty field keeps the stored ones: without this the
        # operator would resubmit the corrected form and silently lose what they had typed.
        if not (self.is_bound and self.errors) or "headers" not in self.fields or "headers" in self.errors:
            return
        if self.fields["headers"].has_changed(None, self.data.get(self.add_prefix("headers"))):
            self.add_error("headers", "Headers are never shown back: enter them again.")


def header_help(names: list[str]) -> SafeString:
    if not names:
        return mark_safe(
            "None set. One <code>Name: value</code> a line; values may name secrets as <code>${name}</code>."
        )
    # Names only, escaped: the API takes any header name, and admin help texts are rendered as HTML.
    return format_html(
        "Set: {}. Leave empty to keep them; enter <code>Name: value</code> lines to replace them all; "
        "enter <code>{}</code> to remove them all. Values may name secrets as <code>${{name}}</code>.",
        ", ".join(names),
        REMOVE_ALL,
    )


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin):
    form = McpServerForm
    list_display = ["name", "owner", "kind", "enabled", "updated_at"]
    list_filter = ["kind", "enabled", PlatformFilter, "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "description", "url"]
    filter_horizontal = ["granted_to"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # the admin's own https_by_default
    actions = ["test_connection"]

    @admin.action(description="Test connection (list the tools a run would get)", permissions=["view"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[McpServer]) -> None:
        for server in queryset[:20]:
            result = probe(server, server.tenant, {})
            if result.status == "connected":
                tools = ", ".join(tool["name"] for tool in result.tools) or "no tools"
                self.message_user(request, f"{server}: connected; tools: {tools}.", messages.SUCCESS)
            else:
                self.message_user(request, f"{server}: failed: {result.reason}", messages.ERROR)

    @admin.display(description="tenant", ordering="tenant")
    def owner(self, obj: McpServer) -> str:
        return owner_of(obj)

    def get_fieldsets(self, request: HttpRequest, obj: McpServer | None = None) -> tuple[tuple[str | None, Any], ...]:
        if obj is None:
            return (
                (None, {"fields": ["tenant", "name", "kind", "description", "enabled", "allowed_tools"]}),
                ("http and sse", {"fields": ["url"]}),
                ("Headers (http, sse, openapi)", {"fields": ["headers"]}),
                ("stdio", {"fields": ["command", "args"]}),
                ("openapi", {"fields": ["openapi_document", "base_url"]}),
                ("Granted to (platform servers only)", {"fields": PLATFORM_FIELDS}),
            )
        granted = ("Granted to", {"fields": PLATFORM_FIELDS})
        connection = KIND_FIELDS[McpServer.Kind(obj.kind)]
        if not self.has_change_permission(request, obj):
            # Django would show every field read-only, the headers field with its values.
            connection = ["header_names" if field == "headers" else field for field in connection]
        return (
            (None, {"fields": ["name", "owner", "kind", "description", "enabled", "allowed_tools"]}),
            *([(obj.get_kind_display(), {"fields": connection})] if connection else []),
            *([granted] if obj.is_platform else []),
            ("Dates", {"fields": ["created_at", "updated_at"]}),
        )

    @admin.display(description="headers")
    def header_names(self, obj: McpServer) -> str:
        return ", ".join(sorted(obj.headers)) or "none"

    def get_readonly_fields(self, request: HttpRequest, obj: McpServer | None = None) -> list[str]:
        # Name and kind are what runs and conversations choose a server by; the owner is whose vault fills
        # its ${secrets}, so moving it would send one tenant's secrets where another tenant pointed it.
        return [] if obj is None else ["name", "owner", "kind", "created_at", "updated_at"]


# --- Secrets --------------------------------------------------------------------------------------


class SecretForm(forms.ModelForm):
    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        strip=False,
        max_length=16_000,
        help_text="Never shown again.",
    )

    class Meta:
        model = Secret
        fields = ["tenant", "name"]
        help_texts = {"name": "Headers name it as ${name}."}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["value"].required = False
            self.fields["value"].help_text = "Never shown. Leave empty to keep the current value."

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        # Only a name a header can reference as ${name} is any use.
        if not SECRET_REFERENCE.fullmatch(f"${{{name}}}"):
            raise ValidationError("Use 1-64 letters, digits, '.', '-' or '_'; headers name it as ${name}.")
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "name" in self.fields and not self.errors:
            tenant, name = cleaned.get("tenant"), cleaned["name"]
            if Secret.objects.filter(tenant=tenant, name=name).exists():
                whose = "The platform" if tenant is None else f"Tenant {tenant.pk!r}"
                self.add_error("name", f"{whose} already has a secret named {name!r}; change it to replace its value.")
        return cleaned


@admin.register(Secret)
class SecretAdmin(admin.ModelAdmin):
    form = SecretForm
    list_display = ["name", "owner", "updated_at"]
    list_filter = ["tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name"]
    # `encrypted` is never shown, not even read-only: ciphertext on a page is a value waiting for its key.

    @admin.display(description="tenant", ordering="tenant")
    def owner(self, obj: Secret) -> str:
        return owner_of(obj)

    def get_fields(self, request: HttpRequest, obj: Secret | None = None) -> list[Any]:
        if obj is None:
            return ["tenant", "name", "value"]
        value = ["value"] if self.has_change_permission(request, obj) else []
        return ["name", "owner", *value, "created_at", "updated_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Secret | None = None) -> list[str]:
        # Headers reference a secret by owner and name, and vault.store keys on them: renaming would
        # replace another secret's value rather than move this one.
        return [] if obj is None else ["name", "owner", "created_at", "updated_at"]

    def save_model(self, request: HttpRequest, obj: Secret, form: forms.ModelForm, change: bool) -> None:
        value = form.cleaned_data["value"]
        if change and not value:
            return  # nothing else is editable
        # Only the vault encrypts; the form's instance never holds the value.
        secret = vault.store(obj.tenant, obj.name, value)
        # The admin goes on to log and redirect to `obj`; make it the stored row.
        obj.pk, obj.encrypted, obj.created_at, obj.updated_at = (
            secret.pk,
            secret.encrypted,
            secret.created_at,
            secret.updated_at,
        )
        obj._state.adding, obj._state.db = False, secret._state.db
