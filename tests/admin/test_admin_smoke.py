"""The operator admin: every ModelAdmin renders, and the operator workflows do what they promise."""

import re
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation, Event, Run
from tenants.models import ApiKey, LanguageModel, Tenant, hash_key

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


def test_operator_creates_a_tenant_with_system_prompt_and_default_model(
    admin_client: Client, offline_model: LanguageModel
) -> None:
    response = admin_client.post(
        url("tenants_tenant_add"),
        {
            "id": "initech",
            "name": "Initech",
            "status": "active",
            "default_model": offline_model.pk,
            "system_prompt": "Answer like a TPS report.",
        },
    )

    assert response.status_code == 302
    tenant = Tenant.objects.get(pk="initech")
    assert (tenant.default_model_id, tenant.system_prompt) == (offline_model.pk, "Answer like a TPS report.")


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


def test_a_key_issued_without_tenant_has_admin_scope(admin_client: Client, db: None) -> None:
    admin_client.post(url("tenants_apikey_add"), {"name": "platform", "tenant": ""})

    key = ApiKey.objects.get()
    assert key.is_admin
    assert b"admin scope" in admin_client.get(url("tenants_apikey_changelist")).content


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


# --- Conversations --------------------------------------------------------------------------------


def test_conversation_changelist_and_change_pages_render_and_add_is_refused(
    admin_client: Client, finished_run: Run
) -> None:
    conversation = finished_run.conversation

    assert admin_client.get(url("conversations_conversation_changelist")).status_code == 200
    assert admin_client.get(url("conversations_conversation_change", conversation.pk)).status_code == 200
    assert admin_client.get(url("conversations_conversation_add")).status_code == 403


def test_conversation_page_shows_the_transcript(admin_client: Client, finished_run: Run) -> None:
    response = admin_client.get(url("conversations_conversation_change", finished_run.conversation_id))

    page = response.content.decode()
    assert "List the files, please." in page
    assert "Let me look at the workspace." in page
    assert "Tool call: Bash" in page
    assert "&quot;command&quot;: &quot;ls -la&quot;" in page
    assert "notes.txt" in page
    assert "run.completed" in page
    assert "Offline model (not Claude)" in page
    assert "DELTA-ONLY-TOKEN" not in page


def test_conversation_search_finds_a_conversation_by_its_exact_id(
    admin_client: Client, conversation: Conversation, other_conversation: Conversation
) -> None:
    response = admin_client.get(url("conversations_conversation_changelist"), {"q": str(conversation.pk)})

    assert list(response.context["cl"].result_list) == [conversation]


def test_conversation_changelist_queries_do_not_grow_with_rows(
    admin_client: Client,
    tenant: Tenant,
    other_tenant: Tenant,
    django_assert_max_num_queries: Callable[..., object],
) -> None:
    for i in range(20):
        owner = tenant if i % 2 else other_tenant
        conversation = Conversation.objects.create(tenant=owner, model=owner.default_model, title=f"chat {i}")
        run = Run.objects.create(conversation=conversation, model=conversation.model, input="hi")
        conversation.active_run = run
        conversation.save(update_fields=["active_run"])

    # Session, user, the tenant and model filters' choices, two counts (filtered and total), the page.
    with django_assert_max_num_queries(7):
        response = admin_client.get(url("conversations_conversation_changelist"))

    assert len(response.context["cl"].result_list) == 20


def test_live_page_renders_with_the_conversation_websocket_path(
    admin_client: Client, conversation: Conversation
) -> None:
    response = admin_client.get(url("conversations_conversation_live", conversation.pk))

    assert response.status_code == 200
    assert f"/ws/tenants/{conversation.tenant_id}/conversations/{conversation.pk}/" in response.content.decode()
    assert b"Offline model (not Claude)" in response.content


def test_live_page_requires_a_staff_login(client: Client, conversation: Conversation) -> None:
    response = client.get(url("conversations_conversation_live", conversation.pk))

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_an_idle_conversation_can_be_deleted_with_its_runs_and_events(admin_client: Client, finished_run: Run) -> None:
    response = admin_client.post(
        url("conversations_conversation_delete", finished_run.conversation_id), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Conversation.objects.exists()
    assert not Event.objects.exists()


def test_a_conversation_with_an_active_run_cannot_be_deleted(admin_client: Client, running_run: Run) -> None:
    response = admin_client.post(url("conversations_conversation_delete", running_run.conversation_id), {"post": "yes"})

    assert response.status_code == 403
    assert Conversation.objects.filter(pk=running_run.conversation_id).exists()


# --- Runs -----------------------------------------------------------------------------------------


def test_run_changelist_and_change_pages_render_and_add_is_refused(admin_client: Client, finished_run: Run) -> None:
    assert admin_client.get(url("conversations_run_changelist")).status_code == 200
    assert admin_client.get(url("conversations_run_change", finished_run.pk)).status_code == 200
    assert admin_client.get(url("conversations_run_add")).status_code == 403


def test_interrupt_action_ends_a_queued_run_and_releases_the_conversation(
    admin_client: Client, running_run: Run
) -> None:
    admin_client.post(
        url("conversations_run_changelist"), {"action": "interrupt_runs", "_selected_action": [running_run.pk]}
    )

    running_run.refresh_from_db()
    assert running_run.status == Run.Status.INTERRUPTED
    assert Conversation.objects.get(pk=running_run.conversation_id).active_run_id is None
    assert Event.objects.filter(run=running_run, type="run.interrupted").count() == 1


def test_interrupt_action_reports_a_run_that_holds_no_lease(admin_client: Client, running_run: Run) -> None:
    Conversation.objects.filter(pk=running_run.conversation_id).update(active_run=None)

    response = admin_client.post(
        url("conversations_run_changelist"),
        {"action": "interrupt_runs", "_selected_action": [running_run.pk]},
        follow=True,
    )

    assert "is not its conversation&#x27;s active run" in response.content.decode()
    running_run.refresh_from_db()
    assert running_run.status == Run.Status.QUEUED


# --- Events ---------------------------------------------------------------------------------------


def test_event_changelist_and_change_pages_render_and_add_is_refused(admin_client: Client, finished_run: Run) -> None:
    event = Event.objects.filter(run=finished_run).first()
    assert event is not None

    assert admin_client.get(url("conversations_event_changelist")).status_code == 200
    assert admin_client.get(url("conversations_event_change", event.pk)).status_code == 200
    assert admin_client.get(url("conversations_event_add")).status_code == 403


def test_event_search_by_conversation_id_and_type_filter(
    admin_client: Client, finished_run: Run, other_conversation: Conversation
) -> None:
    response = admin_client.get(
        url("conversations_event_changelist"), {"q": str(finished_run.conversation_id), "type": "tool.result"}
    )

    events = list(response.context["cl"].result_list)
    assert [event.type for event in events] == ["tool.result"]
