"""The operator admin of the catalog, tenants and keys: every page renders, and the workflows do what they promise."""

import re
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.admin import site
from django.contrib.admin.options import InlineModelAdmin
from django.contrib.auth.models import User
from django.db.models import Model
from django.test import Client, RequestFactory
from django.urls import reverse

from conversations.models import Conversation, Event, Run
from skills.admin import SkillVersionInline
from skills.models import Skill
from tenants.admin import PriceHistoryInline
from tenants.models import ApiKey, LanguageModel, Tenant, hash_key
from usage.models import BudgetCounter, UsageRecord
from workspaces.models import WorkspaceFile

pytestmark = pytest.mark.django_db

RAW_KEY = re.compile(r"ak_[A-Za-z0-9_-]{20,}")


def url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


# --- Language models ------------------------------------------------------------------------------


def test_model_changelist_add_and_change_pages_render(admin_client: Client, offline_model: LanguageModel) -> None:
    for page in (
        url("tenants_languagemodel_changelist"),
        url("tenants_languagemodel_add"),
        url("tenants_languagemodel_change", offline_model.pk),
    ):
        assert admin_client.get(page).status_code == 200, page


def test_operator_defines_a_model_with_prices(admin_client: Client) -> None:
    response = admin_client.post(
        url("tenants_languagemodel_add"),
        {
            "id": "sonnet",
            "display_name": "Claude Sonnet",
            "provider": "anthropic",
            "provider_model_id": "claude-sonnet-4-5",
            "status": "active",
            "context_window": 200000,
            "max_output_tokens": 32000,
            "input_price": "3",
            "output_price": "15",
            "cache_write_5m_price": "3.75",
            "cache_write_1h_price": "6",
            "cache_read_price": "0.3",
        },
    )

    assert response.status_code == 302
    model = LanguageModel.objects.get(pk="sonnet")
    assert (model.input_price, model.output_price, model.cache_read_price) == (
        Decimal("3"),
        Decimal("15"),
        Decimal("0.3"),
    )
    (first_price,) = model.prices.all()
    assert (first_price.effective_from, first_price.price_values()) == (model.created_at, model.price_values())


def test_model_changelist_counts_tenants_and_conversations(
    admin_client: Client, conversation: Conversation, other_conversation: Conversation
) -> None:
    response = admin_client.get(url("tenants_languagemodel_changelist"))

    model = response.context["cl"].result_list[0]
    assert (model.tenant_count, model.conversation_count) == (2, 2)


def test_mark_deprecated_action_deprecates_the_selected_models(
    admin_client: Client, offline_model: LanguageModel
) -> None:
    admin_client.post(
        url("tenants_languagemodel_changelist"),
        {"action": "mark_deprecated", "_selected_action": [offline_model.pk]},
    )

    offline_model.refresh_from_db()
    assert offline_model.status == LanguageModel.Status.DEPRECATED


def test_a_model_in_use_cannot_be_deleted(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.post(url("tenants_languagemodel_delete", tenant.default_model_id), {"post": "yes"})

    assert response.status_code == 200
    assert b"protected" in response.content
    assert LanguageModel.objects.filter(pk=tenant.default_model_id).exists()


# --- Tenants --------------------------------------------------------------------------------------


def test_tenant_changelist_add_and_change_pages_render(admin_client: Client, tenant: Tenant) -> None:
    for page in (
        url("tenants_tenant_changelist"),
        url("tenants_tenant_add"),
        url("tenants_tenant_change", tenant.pk),
    ):
        assert admin_client.get(page).status_code == 200, page


def test_operator_creates_a_tenant_with_a_time_zone_and_default_model(
    admin_client: Client, offline_model: LanguageModel
) -> None:
    response = admin_client.post(
        url("tenants_tenant_add"),
        {
            "id": "initech",
            "name": "Initech",
            "status": "active",
            "default_model": offline_model.pk,
            "time_zone": "Europe/Paris",
        },
    )

    assert response.status_code == 302
    tenant = Tenant.objects.get(pk="initech")
    assert (tenant.default_model_id, tenant.time_zone) == (offline_model.pk, "Europe/Paris")


def test_a_new_tenant_cannot_default_to_a_deprecated_model(admin_client: Client, offline_model: LanguageModel) -> None:
    offline_model.status = LanguageModel.Status.DEPRECATED
    offline_model.save()

    response = admin_client.post(
        url("tenants_tenant_add"),
        {"id": "initech", "name": "Initech", "status": "active", "default_model": offline_model.pk},
    )

    assert response.status_code == 200
    assert "deprecated" in str(response.context["adminform"].form.errors["default_model"])
    assert not Tenant.objects.filter(pk="initech").exists()


def test_tenant_changelist_counts_conversations_active_runs_and_live_keys(
    admin_client: Client, tenant: Tenant, running_run: Run, tenant_key: str
) -> None:
    Conversation.objects.create(tenant=tenant, model=tenant.default_model)
    revoked, _ = ApiKey.issue("old", tenant=tenant)
    revoked.revoke()

    response = admin_client.get(url("tenants_tenant_changelist"))

    row = response.context["cl"].result_list[0]
    assert (row.conversation_count, row.active_run_count, row.live_key_count) == (2, 1, 1)


def test_tenant_changelist_queries_do_not_grow_with_rows(
    admin_client: Client,
    make_tenant: Callable[..., Tenant],
    django_assert_max_num_queries: Callable[..., object],
) -> None:
    for i in range(20):
        tenant = make_tenant(f"tenant-{i:02d}")
        ApiKey.issue(f"key {i}", tenant=tenant)
        Conversation.objects.create(tenant=tenant, model=tenant.default_model)

    # Session, user, the default-model filter's choices, two counts (filtered and total), the page.
    with django_assert_max_num_queries(6):
        response = admin_client.get(url("tenants_tenant_changelist"))

    assert len(response.context["cl"].result_list) == 20


def test_deactivate_action_deactivates_the_selected_tenants(admin_client: Client, tenant: Tenant) -> None:
    admin_client.post(url("tenants_tenant_changelist"), {"action": "deactivate", "_selected_action": [tenant.pk]})

    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.INACTIVE


def test_a_tenant_is_deleted_with_its_finished_conversations(admin_client: Client, finished_run: Run) -> None:
    tenant_id = finished_run.conversation.tenant_id

    response = admin_client.post(url("tenants_tenant_delete", tenant_id), {"post": "yes"})

    assert response.status_code == 302
    assert not Tenant.objects.filter(pk=tenant_id).exists()
    assert not Event.objects.exists()


def test_a_tenant_with_an_active_run_cannot_be_deleted(admin_client: Client, running_run: Run) -> None:
    tenant_id = running_run.conversation.tenant_id

    response = admin_client.post(url("tenants_tenant_delete", tenant_id), {"post": "yes"})

    assert response.status_code == 403
    assert Tenant.objects.filter(pk=tenant_id).exists()


# --- API keys -------------------------------------------------------------------------------------


def test_api_key_changelist_add_and_change_pages_render(admin_client: Client, tenant: Tenant) -> None:
    key, _ = ApiKey.issue("acme ci", tenant=tenant)

    for page in (url("tenants_apikey_changelist"), url("tenants_apikey_add"), url("tenants_apikey_change", key.pk)):
        assert admin_client.get(page).status_code == 200, page


def test_issuing_a_key_shows_the_raw_key_once_and_stores_only_its_hash(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.post(
        url("tenants_apikey_add"), {"name": "acme ci", "tenant": tenant.pk, "_continue": "1"}, follow=True
    )

    shown = RAW_KEY.findall(response.content.decode())
    assert len(set(shown)) == 1
    raw_key = shown[0]
    key = ApiKey.objects.get()
    assert key.key_hash == hash_key(raw_key)
    assert (key.name, key.tenant_id, raw_key.startswith(key.prefix)) == ("acme ci", tenant.pk, True)
    assert "copy it now, it will not be shown again" in response.content.decode()
    again = admin_client.get(url("tenants_apikey_change", key.pk)).content.decode()
    assert raw_key not in again
    assert key.key_hash not in again


def test_an_admin_scope_key_is_an_explicit_choice(admin_client: Client, db: None) -> None:
    admin_client.post(url("tenants_apikey_add"), {"name": "platform", "tenant": "", "admin_scope": "on"})

    key = ApiKey.objects.get()
    assert key.is_admin
    assert b"admin scope" in admin_client.get(url("tenants_apikey_changelist")).content


def test_a_key_without_tenant_or_admin_scope_is_refused(admin_client: Client, tenant: Tenant) -> None:
    empty = admin_client.post(url("tenants_apikey_add"), {"name": "careless", "tenant": ""})
    both = admin_client.post(url("tenants_apikey_add"), {"name": "confused", "tenant": tenant.pk, "admin_scope": "on"})

    assert b"or tick Admin scope" in empty.content
    assert b"An admin-scope key belongs to no tenant" in both.content
    assert not ApiKey.objects.exists()


def test_api_key_change_form_edits_only_the_name(admin_client: Client, tenant: Tenant, other_tenant: Tenant) -> None:
    key, _ = ApiKey.issue("acme ci", tenant=tenant)

    admin_client.post(url("tenants_apikey_change", key.pk), {"name": "acme deploys", "tenant": other_tenant.pk})

    key.refresh_from_db()
    assert (key.name, key.tenant_id) == ("acme deploys", tenant.pk)


def test_revoke_action_revokes_the_selected_keys(admin_client: Client, tenant: Tenant) -> None:
    key, _ = ApiKey.issue("acme ci", tenant=tenant)

    admin_client.post(url("tenants_apikey_changelist"), {"action": "revoke_keys", "_selected_action": [key.pk]})

    key.refresh_from_db()
    assert key.is_revoked


# --- History written only by the platform -----------------------------------------------------------

PLATFORM_WRITTEN = [Run, Event, UsageRecord, BudgetCounter, WorkspaceFile]


@pytest.mark.parametrize("model", PLATFORM_WRITTEN, ids=lambda model: model.__name__)
def test_platform_written_history_cannot_be_added_changed_or_deleted_even_by_a_superuser(
    rf: RequestFactory, admin_user: User, model: type[Model]
) -> None:
    request = rf.get("/")
    request.user = admin_user
    model_admin = site._registry[model]

    answers = (
        model_admin.has_view_permission(request),
        model_admin.has_add_permission(request),
        model_admin.has_change_permission(request),
        model_admin.has_delete_permission(request),
    )

    assert answers == (True, False, False, False)


@pytest.mark.parametrize(
    ("parent", "inline"),
    [(LanguageModel, PriceHistoryInline), (Skill, SkillVersionInline)],
    ids=["price history", "skill versions"],
)
def test_history_inlines_show_rows_but_take_no_additions_changes_or_deletions(
    rf: RequestFactory, admin_user: User, parent: type[Model], inline: type[InlineModelAdmin]
) -> None:
    request = rf.get("/")
    request.user = admin_user
    history = inline(parent, site)

    answers = (
        history.has_view_permission(request),
        history.has_add_permission(request, None),
        history.has_change_permission(request),
        history.get_formset(request).can_delete,
    )

    assert answers == (True, False, False, False)
