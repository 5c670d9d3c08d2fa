"""Operator admin for the model catalog, tenants and API keys."""

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from agents.egress import EgressSettingsError, check_allowlist, check_headers, egress_warnings
from conversations.models import Conversation, Event, Run
from skills.models import SkillVersion
from tenants.admin_mixins import ReadOnlyAdminMixin
from tenants.models import (
    PRICE_FIELDS,
    ApiKey,
    ApiKeyQuerySet,
    LanguageModel,
    LanguageModelQuerySet,
    ModelPrice,
    Tenant,
)
from tenants.services import delete_tenant, save_language_model
from usage.models import BudgetCounter, UsageRecord
from workspaces.models import WorkspaceFile


def count_of(related: QuerySet[Any], fk_field: str) -> Coalesce:
    """The number of `related` rows pointing at the outer row, as an annotation.

    A correlated subquery rather than `Count("relation")`: counting two or three reverse relations
    through joins multiplies their rows, which gets slow long before it gets wrong.
    """
    counted = (
        related.filter(**{fk_field: OuterRef("pk")}).order_by().values(fk_field).annotate(n=Count("pk")).values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def drop_history_permissions(perms_needed: set[str]) -> set[str]:
    """Deleting an owner deletes history whose own admins are read-only: runs, events, usage records,
    workspace file versions, skill versions.

    Their admins refuse deletion so history cannot be cut out piece by piece; deleting the whole
    owner is a different, deliberate act that the owner's delete permission already governs.
    """
    history = (Run, Event, UsageRecord, BudgetCounter, WorkspaceFile, SkillVersion)
    return perms_needed - {str(model._meta.verbose_name) for model in history}


class PriceHistoryInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The prices a model has had and has, newest first: read-only, since calls were charged at them."""

    model = ModelPrice
    verbose_name = "price"
    verbose_name_plural = "Price history, newest first: the first is in effect (USD per million tokens)"
    fields = readonly_fields = ("effective_from", *PRICE_FIELDS, "created_at")
    ordering = ["-effective_from"]
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelPrice]:
        return super().get_queryset(request).filter(effective_from__lte=timezone.now())


class ScheduledPriceForm(forms.ModelForm):
    class Meta:
        model = ModelPrice
        fields = ["effective_from", *PRICE_FIELDS]

    def clean_effective_from(self) -> Any:
        moment = self.cleaned_data["effective_from"]
        if moment <= timezone.now():
            raise forms.ValidationError(
                "A scheduled price starts later than now; to change the price from now, edit the prices above."
            )
        return moment


class ScheduledPriceInline(admin.TabularInline):
    """Prices that take effect later; they can be changed or dropped until then."""

    model = ModelPrice
    form = ScheduledPriceForm
    verbose_name = "scheduled price"
    verbose_name_plural = "Scheduled prices (USD per million tokens, in effect from the given moment on)"
    fields = ["effective_from", *PRICE_FIELDS]
    ordering = ["effective_from"]
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelPrice]:
        return super().get_queryset(request).filter(effective_from__gt=timezone.now())


@admin.register(LanguageModel)
class LanguageModelAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "display_name",
        "provider",
        "provider_model_id",
        "input_price",
        "output_price",
        "cache_write_5m_price",
        "cache_write_1h_price",
        "cache_read_price",
        "status",
        "tenant_count",
        "conversation_count",
    ]
    list_filter = ["provider", "status"]
    search_fields = ["id", "display_name", "provider_model_id"]
    actions = ["mark_deprecated", "mark_active"]
    fieldsets = [
        (None, {"fields": ["id", "display_name", "provider", "provider_model_id", "status"]}),
        ("Limits", {"fields": ["context_window", "max_output_tokens"]}),
        (
            "Prices (USD per million tokens)",
            {
                "fields": list(PRICE_FIELDS),
                "description": "The price in effect now. Changed, they apply from the moment you save: calls "
                "made before keep the price they were charged at. To change them from a later moment, "
                "schedule a price below.",
            },
        ),
        ("Dates", {"fields": ["created_at", "updated_at"]}),
    ]
    inlines = [PriceHistoryInline, ScheduledPriceInline]

    def get_inlines(
        self, request: HttpRequest, obj: LanguageModel | None
    ) -> list[type[admin.options.InlineModelAdmin]]:
        # A new model has no history yet; its first price is the one it is created with.
        return self.inlines if obj is not None else []

    def get_readonly_fields(self, request: HttpRequest, obj: LanguageModel | None = None) -> list[str]:
        # Editing a primary key in admin saves a copy under the new id instead of renaming.
        return ["agent_profiles", "egress_warnings", "created_at", "updated_at"] + (["id"] if obj is not None else [])

    def get_queryset(self, request: HttpRequest) -> QuerySet[LanguageModel]:
        return (
            cast(LanguageModelQuerySet, super().get_queryset(request))
            .with_prices()
            .annotate(
                tenant_count=count_of(Tenant.objects.all(), "default_model"),
                conversation_count=count_of(Conversation.objects.all(), "model"),
            )
        )

    def save_model(self, request: HttpRequest, obj: LanguageModel, form: forms.ModelForm, change: bool) -> None:
        save_language_model(obj)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> LanguageModel | None:
        model = super().get_object(request, object_id, from_field)
        if model is not None:
            model.show_price_in_effect()
        return model

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        for model in changelist.result_list:
            model.show_price_in_effect()
        return changelist

    @admin.display(description="tenants", ordering="tenant_count")
    def tenant_count(self, obj: LanguageModel) -> int:
        return obj.tenant_count  # type: ignore[attr-defined]

    @admin.display(description="conversations", ordering="conversation_count")
    def conversation_count(self, obj: LanguageModel) -> int:
        return obj.conversation_count  # type: ignore[attr-defined]

    @admin.action(description="Mark deprecated", permissions=["change"])
    def mark_deprecated(self, request: HttpRequest, queryset: QuerySet[LanguageModel]) -> None:
        # Existing conversations keep their model but refuse new runs on it (services.start_run).
        updated = queryset.update(status=LanguageModel.Status.DEPRECATED, updated_at=timezone.now())
        self.message_user(request, f"Marked {updated} model(s) deprecated.", messages.SUCCESS)

    @admin.action(description="Mark active", permissions=["change"])
    def mark_active(self, request: HttpRequest, queryset: QuerySet[LanguageModel]) -> None:
        updated = queryset.update(status=LanguageModel.Status.ACTIVE, updated_at=timezone.now())
        self.message_user(request, f"Marked {updated} model(s) active.", messages.SUCCESS)


class TenantAdminForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = [
            "id",
            "name",
            "status",
            "default_model",
            "run_budget_usd",
            "run_budget_calls",
            "monthly_budget_usd",
            "monthly_budget_calls",
            "user_daily_budget_usd",
            "user_daily_budget_calls",
            "user_monthly_budget_usd",
            "user_monthly_budget_calls",
            "conversation_budget_usd",
            "conversation_budget_calls",
            "chat_shows_cost",
            "time_zone",
            "api_requests_per_minute",
            "user_api_requests_per_minute",
            "runs_per_minute",
            "user_runs_per_minute",
            "egress_allowlist",
            "egress_headers",
        ]
        help_texts = {
            "egress_allowlist": 'A JSON list of where its agents\' sandboxes may connect, e.g. ["api.github.com", '
            '"*.pypi.org", "files.pythonhosted.org", "10.1.0.0/16:5432"]: a host, its subdomains (*.example.com, not '
            "the host itself), an address or a network, each with an optional port (example.com:8080, :* for any); "
            "without one, 80 and 443. [] (the default): nowhere. Agent profiles may narrow it, never widen it; "
            "EGRESS_DENY and the outbound guard (loopback, private, metadata addresses) refuse first.",
            "egress_headers": 'A JSON object of headers the egress proxy adds, by exact host, e.g. {"api.github.com": '
            '{"Authorization": "Bearer ${github_token}"}}. ${name} is one of the tenant\'s secrets (MCP servers › '
            "Secrets), revealed only in the proxy, never in the sandbox; a missing one refuses that host's requests "
            "until it is stored. The host must be on the allow-list. Write credentials only as ${name}: this page "
            "shows what is written here.",
        }
        widgets = {
            "egress_allowlist": forms.Textarea(attrs={"rows": 3, "cols": 100, "spellcheck": "false"}),
            "egress_headers": forms.Textarea(attrs={"rows": 3, "cols": 100, "spellcheck": "false"}),
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "egress_allowlist" in self.errors or "egress_headers" in self.errors:
            return cleaned
        try:
            cleaned["egress_allowlist"] = check_allowlist(cleaned.get("egress_allowlist") or [])
            cleaned["egress_headers"] = check_headers(cleaned.get("egress_headers") or {}, cleaned["egress_allowlist"])
        except EgressSettingsError as problem:
            self.add_error(problem.field, problem.message)
        return cleaned

    def clean_default_model(self) -> LanguageModel:
        model: LanguageModel = self.cleaned_data["default_model"]
        model.check_usable_as_default(self.instance.default_model_id if self.instance.pk is not None else None)
        return model


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantAdminForm
    list_display = [
        "id",
        "name",
        "status",
        "default_model",
        "run_budget_usd",
        "run_budget_calls",
        "conversation_count",
        "active_run_count",
        "live_key_count",
    ]
    list_filter = ["status", "default_model"]
    list_select_related = ["default_model"]
    search_fields = ["id", "name"]
    actions = ["activate", "deactivate"]
    fieldsets = [
        (None, {"fields": ["id", "name", "status"]}),
        (
            "Agents",
            {
                "fields": ["default_model", "agent_profiles"],
                "description": "Instructions, tools and models are the tenant's agent profiles'; the default model is "
                "theirs when they name none.",
            },
        ),
        (
            "Network",
            {
                "fields": ["egress_allowlist", "egress_headers", "egress_warnings"],
                "description": "Where its runs' sandboxes may connect, through each run's egress proxy, and the "
                "credentials the proxy adds on the way out (the sandbox never holds them).",
            },
        ),
        ("Chat page", {"fields": ["chat_shows_cost"]}),
        ("Reports", {"fields": ["time_zone"]}),
        (
            "Rate limits (per minute, across every web process)",
            {
                "fields": [
                    "api_requests_per_minute",
                    "user_api_requests_per_minute",
                    "runs_per_minute",
                    "user_runs_per_minute",
                ]
            },
        ),
        (
            "Budgets",
            {
                "fields": [
                    ("monthly_budget_usd", "monthly_budget_calls"),
                    ("user_daily_budget_usd", "user_daily_budget_calls"),
                    ("user_monthly_budget_usd", "user_monthly_budget_calls"),
                    ("conversation_budget_usd", "conversation_budget_calls"),
                    ("run_budget_usd", "run_budget_calls"),
                ],
                "description": (
                    "Checked by the gateway before every model call, which reserves its worst-case cost. Months and "
                    "days begin in the tenant's time zone. End users' budgets are defaults that an end user's own "
                    "budget (Usage › User budgets) replaces; conversations and runs may ask for less. Empty: unlimited."
                ),
            },
        ),
        ("Dates", {"fields": ["created_at", "updated_at"]}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> list[str]:
        # The id is in every URL and API key scope; editing it in admin would save a copy.
        return ["agent_profiles", "egress_warnings", "created_at", "updated_at"] + (["id"] if obj is not None else [])

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                conversation_count=count_of(Conversation.objects.all(), "tenant"),
                active_run_count=count_of(Conversation.objects.filter(active_run__isnull=False), "tenant"),
                live_key_count=count_of(ApiKey.objects.live(), "tenant"),
            )
        )

    @admin.display(description="conversations", ordering="conversation_count")
    def conversation_count(self, obj: Tenant) -> int:
        return obj.conversation_count  # type: ignore[attr-defined]

    @admin.display(description="egress warnings")
    def egress_warnings(self, obj: Tenant) -> str:
        return "\n".join(egress_warnings(obj)) or "none" if obj.pk else "-"

    @admin.display(description="agent profiles")
    def agent_profiles(self, obj: Tenant) -> str:
        if obj._state.adding:  # the add page (the id is a CharField: "" until saved)
            return "A new tenant gets its default agent profile on first use; add others once it is saved."
        url = reverse("admin:agents_agentprofile_changelist") + f"?tenant__id__exact={obj.pk}"
        count = obj.agents.count()
        return format_html('<a href="{}">{} agent profile{}</a>', url, count, "" if count == 1 else "s")

    @admin.display(description="active runs", ordering="active_run_count")
    def active_run_count(self, obj: Tenant) -> int:
        return obj.active_run_count  # type: ignore[attr-defined]

    @admin.display(description="live API keys", ordering="live_key_count")
    def live_key_count(self, obj: Tenant) -> int:
        return obj.live_key_count  # type: ignore[attr-defined]

    @admin.action(description="Activate selected tenants", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        updated = queryset.update(status=Tenant.Status.ACTIVE, updated_at=timezone.now())
        self.message_user(request, f"Activated {updated} tenant(s).", messages.SUCCESS)

    @admin.action(description="Deactivate selected tenants", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        # Runs already under way finish; new conversations and messages are refused (services).
        updated = queryset.update(status=Tenant.Status.INACTIVE, updated_at=timezone.now())
        self.message_user(request, f"Deactivated {updated} tenant(s).", messages.SUCCESS)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, set[str], Any]:
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, drop_history_permissions(perms_needed), protected

    def delete_model(self, request: HttpRequest, obj: Tenant) -> None:
        delete_tenant(obj)  # its stored files go too, once the rows are gone

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            delete_tenant(tenant)


class RevokedFilter(admin.SimpleListFilter):
    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "Live"), ("yes", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() == "no":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


class ScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("admin", "Admin (platform)"), ("tenant", "Tenant")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() == "admin":
            return queryset.filter(tenant__isnull=True)
        if self.value() == "tenant":
            return queryset.filter(tenant__isnull=False)
        return queryset


class ApiKeyAddForm(forms.ModelForm):
    admin_scope = forms.BooleanField(
        required=False,
        label="Admin scope",
        help_text="A platform admin key reaches every tenant. Tick this only to make one; leave Tenant empty then.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "tenant", "admin_scope"]
        help_texts = {"tenant": "The tenant this key belongs to."}

    def clean(self) -> dict[str, Any]:
        # The powerful choice is an explicit one: an empty Tenant alone makes no admin key.
        cleaned = super().clean() or {}
        tenant, admin_scope = cleaned.get("tenant"), cleaned.get("admin_scope")
        if tenant is None and not admin_scope:
            self.add_error(
                "tenant", "Choose the key's tenant, or tick Admin scope for a key that reaches every tenant."
            )
        if tenant is not None and admin_scope:
            self.add_error("admin_scope", "An admin-scope key belongs to no tenant: empty Tenant, or untick this.")
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "scope", "prefix", "created_at", "last_used_at", "revoked"]
    list_filter = ["tenant", RevokedFilter, ScopeFilter]
    list_select_related = ["tenant"]
    search_fields = ["name", "prefix", "tenant__id"]
    actions = ["revoke_keys"]
    # key_hash is never shown: with it, anyone reading the page could look keys up offline.
    change_fields = ("name", "scope", "prefix", "revoked", "created_at", "last_used_at", "revoked_at")
    change_readonly_fields = ("scope", "prefix", "revoked", "created_at", "last_used_at", "revoked_at")

    def get_form(self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return ("name", "tenant", "admin_scope") if obj is None else self.change_fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return () if obj is None else self.change_readonly_fields

    @admin.display(description="scope", ordering="tenant")
    def scope(self, obj: ApiKey) -> str:
        return "admin scope" if obj.is_admin else f"{obj.tenant} ({obj.tenant_id})"

    @admin.display(description="revoked", boolean=True, ordering="revoked_at")
    def revoked(self, obj: ApiKey) -> bool:
        return obj.is_revoked

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        # Only ApiKey.issue() makes keys: it alone sees the raw value, and only its hash is stored.
        key, raw_key = ApiKey.issue(form.cleaned_data["name"], form.cleaned_data["tenant"])
        # The admin goes on to log and redirect to `obj`; make it the issued row.
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = key.pk, key.prefix, key.key_hash, key.created_at
        obj._state.adding, obj._state.db = False, key._state.db
        messages.warning(
            request,
            format_html(
                'API key “{}”: <code style="user-select: all; font-size: 1.1em">{}</code> — '
                "copy it now, it will not be shown again.",
                key.name,
                raw_key,
            ),
        )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: ApiKeyQuerySet) -> None:
        keys = list(queryset.live())
        for key in keys:
            key.revoke()
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)
