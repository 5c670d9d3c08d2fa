"""The usage report API: totals and groups over a window, scoped to the caller's tenant and end user."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from django.test import Client
from rest_framework.test import APIClient

from conversations.models import Conversation, Run
from tenants.models import LanguageModel, Tenant
from tests.api.assertions import error_of
from tests.conftest import client_with_key
from tests.factories import ConversationFactory
from usage.models import UsageRecord

# Also on the embedded SQLite (`make run`'s default), where PostgreSQL's SQL would not run.
pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]

URL = "/api/tenants/acme/usage"
SCRIPTED = {"input": 1200, "output": 300, "cache_read": 5000, "cache_write_5m": 700, "cache_write_1h": 100}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def figures(
    input: int,
    output: int,
    calls: int,
    cost: str,
    cache_write_5m: int = 0,
    cache_write_1h: int = 0,
    cache_read: int = 0,
    runs: int = 0,
    failed_runs: int = 0,
) -> dict[str, Any]:
    return {
        "input_tokens": input,
        "output_tokens": output,
        "cache_write_5m_tokens": cache_write_5m,
        "cache_write_1h_tokens": cache_write_1h,
        "cache_read_tokens": cache_read,
        "model_calls": calls,
        "cost_usd": cost,
        "runs": runs,
        "failed_runs": failed_runs,
    }


@pytest.fixture
def bobs_conversation(tenant: Tenant, haiku: LanguageModel) -> Conversation:
    return ConversationFactory(tenant=tenant, model=haiku, user_id="bob", title="Cheap")


@pytest.fixture
def usage_history(
    run: Run,
    bobs_conversation: Conversation,
    other_conversation: Conversation,
    make_run: Callable[..., Run],
    record: Callable[..., UsageRecord],
) -> dict[str, Run]:
    """acme: alice's run on Sonnet on Nov 1 (calls on Nov 1 and 2), bob's failed run on Haiku on Nov 2;
    globex: one call on Nov 1."""
    bobs_run = make_run(bobs_conversation, status=Run.Status.FAILED)
    globex_run = make_run(other_conversation)
    for started, started_at in [
        (run, "2026-11-01T09:00:00"),
        (bobs_run, "2026-11-02T00:00:00"),
        (globex_run, "2026-11-01T12:00:00"),
    ]:
        Run.objects.filter(pk=started.pk).update(created_at=at(started_at))
    record(run, "msg_1", at=at("2026-11-01T10:00:00"), **SCRIPTED)  # 0.012825
    record(run, "msg_2", at=at("2026-11-02T23:59:59"), input=100, output=50)  # 0.00105
    record(bobs_run, "msg_3", at=at("2026-11-02T00:00:00"), input=1000, output=1000)  # 0.006
    record(globex_run, "msg_4", at=at("2026-11-01T12:00:00"), input=5)
    return {"alice": run, "bob": bobs_run}


ALL_OF_ACME = figures(
    2300, 1350, 3, "0.0198750000", cache_write_5m=700, cache_write_1h=100, cache_read=5000, runs=2, failed_runs=1
)
ALICE = figures(1300, 350, 2, "0.0138750000", cache_write_5m=700, cache_write_1h=100, cache_read=5000, runs=1)
BOB = figures(1000, 1000, 1, "0.0060000000", runs=1, failed_runs=1)


def test_the_report_gives_the_tenants_totals(api_client: APIClient, usage_history: dict[str, Run]) -> None:
    response = api_client.get(URL)

    assert response.status_code == 200
    assert response.json() == {
        "tenant": "acme",
        "user_id": "",
        "from": None,
        "to": None,
        "group_by": None,
        "totals": ALL_OF_ACME,
        "groups": [],
        "groups_truncated": False,
    }


def test_grouping_by_day_follows_utc_days_in_order(api_client: APIClient, usage_history: dict[str, Run]) -> None:
    response = api_client.get(URL, {"group_by": "day"})

    assert response.json()["groups"] == [
        {
            "key": "2026-11-01",
            **figures(1200, 300, 1, "0.0128250000", cache_write_5m=700, cache_write_1h=100, cache_read=5000, runs=1),
        },
        {"key": "2026-11-02", **figures(1100, 1050, 2, "0.0070500000", runs=1, failed_runs=1)},
    ]
    assert response.json()["totals"] == ALL_OF_ACME


@pytest.mark.parametrize(
    ("group_by", "keys"),
    [("model", ["sonnet", "haiku"]), ("user", ["alice", "bob"])],
)
def test_grouping_by_model_or_user_puts_the_costliest_first(
    api_client: APIClient, usage_history: dict[str, Run], group_by: str, keys: list[str]
) -> None:
    response = api_client.get(URL, {"group_by": group_by})

    assert response.json()["groups"] == [{"key": keys[0], **ALICE}, {"key": keys[1], **BOB}]


def test_grouping_by_conversation_keeps_deleted_conversations_as_null(
    api_client: APIClient, usage_history: dict[str, Run]
) -> None:
    alices_conversation = usage_history["alice"].conversation_id
    usage_history["bob"].conversation.delete()

    response = api_client.get(URL, {"group_by": "conversation"})

    # Bob's run went with his conversation; the records of its calls stay.
    no_runs = {"runs": 0, "failed_runs": 0}
    assert response.json()["groups"] == [{"key": str(alices_conversation), **ALICE}, {"key": None, **BOB, **no_runs}]
    assert response.json()["totals"] == {**ALL_OF_ACME, "runs": 1, "failed_runs": 0}


def test_from_is_inclusive_and_to_exclusive(api_client: APIClient, usage_history: dict[str, Run]) -> None:
    response = api_client.get(URL, {"from": "2026-11-01T10:00:00Z", "to": "2026-11-02"})

    body = response.json()
    assert (body["from"], body["to"]) == ("2026-11-01T10:00:00Z", "2026-11-02T00:00:00Z")
    assert body["totals"] == figures(
        1200, 300, 1, "0.0128250000", cache_write_5m=700, cache_write_1h=100, cache_read=5000
    )


def test_a_date_time_with_an_offset_is_honoured(api_client: APIClient, usage_history: dict[str, Run]) -> None:
    # 2026-11-02T01:00+02:00 is 2026-11-01T23:00Z: bob's call at midnight UTC is after it.
    response = api_client.get(URL, {"from": "2026-11-02T01:00:00+02:00", "group_by": "user"})

    assert [group["key"] for group in response.json()["groups"]] == ["bob", "alice"]


def test_an_empty_window_reports_zeros(api_client: APIClient, usage_history: dict[str, Run]) -> None:
    response = api_client.get(URL, {"from": "2030-01-01", "group_by": "day"})

    assert response.json()["totals"] == figures(0, 0, 0, "0.0000000000")
    assert response.json()["groups"] == []


def test_with_x_user_id_the_report_covers_only_that_end_user(tenant_key: str, usage_history: dict[str, Run]) -> None:
    response = client_with_key(tenant_key, user_id="bob").get(URL, {"group_by": "model"})

    assert response.json()["user_id"] == "bob"
    assert response.json()["totals"] == BOB
    assert response.json()["groups"] == [{"key": "haiku", **BOB}]


# --- tenancy ------------------------------------------------------------------------------------------


def test_another_tenants_usage_is_404(other_api_client: APIClient, usage_history: dict[str, Run]) -> None:
    error_of(other_api_client.get(URL), 404)
    error_of(other_api_client.get(f"{URL}/runs/{usage_history['alice'].pk}"), 404)


def test_another_tenants_records_are_not_counted(api_client: APIClient, usage_history: dict[str, Run]) -> None:
    response = api_client.get(URL, {"group_by": "conversation"})

    assert response.json()["totals"]["model_calls"] == 3
    assert len(response.json()["groups"]) == 2


def test_an_admin_key_reads_any_tenants_usage(admin_api_client: APIClient, usage_history: dict[str, Run]) -> None:
    assert admin_api_client.get(URL).json()["totals"] == ALL_OF_ACME
    assert admin_api_client.get("/api/tenants/globex/usage").json()["totals"]["model_calls"] == 1


def test_an_unknown_tenant_is_404_even_for_an_admin_key(admin_api_client: APIClient) -> None:
    error_of(admin_api_client.get("/api/tenants/nobody/usage"), 404)


def test_the_report_needs_a_key(usage_history: dict[str, Run]) -> None:
    error_of(APIClient().get(URL), 401)


# --- bad parameters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "hour"}, "group_by"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-02-30"}, "to"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, "to"),
        ({"from": "2026-11-02", "to": "2026-11-02"}, "to"),
        ({"groupby": "day"}, "groupby"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(
    api_client: APIClient, tenant: Tenant, params: dict[str, str], field: str
) -> None:
    error = error_of(api_client.get(URL, params), 400)

    assert field in error["fields"], error


def test_a_bad_parameter_on_another_tenant_is_still_404(other_api_client: APIClient, tenant: Tenant) -> None:
    error_of(other_api_client.get(URL, {"group_by": "hour"}), 404)


# --- queries ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("group_by", "groups"), [("day", 12), ("model", 1), ("user", 12), ("conversation", 12)])
def test_the_report_takes_the_same_few_queries_however_many_groups(
    api_client: APIClient,
    tenant: Tenant,
    sonnet: LanguageModel,
    make_run: Callable[..., Run],
    record: Callable[..., UsageRecord],
    django_assert_num_queries: Any,
    group_by: str,
    groups: int,
) -> None:
    api_client.get(URL)  # the key's first use is also written down (ApiKey.touch)
    for n in range(12):
        run = make_run(ConversationFactory(tenant=tenant, model=sonnet, user_id=f"user-{n}"))
        Run.objects.filter(pk=run.pk).update(created_at=at(f"2026-11-{n + 1:02}T11:00:00"))
        record(run, f"msg_{n}", at=at(f"2026-11-{n + 1:02}T12:00:00"), input=n, output=1)

    # the key, the tenant, the groups (which add up to the totals), the runs
    with django_assert_num_queries(4):
        response = api_client.get(URL, {"group_by": group_by})

    assert len(response.json()["groups"]) == groups


def test_totals_count_the_groups_left_out_of_a_truncated_report(
    api_client: APIClient, usage_history: dict[str, Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("usage.api.MAX_GROUPS", 1)

    report = api_client.get(URL, {"group_by": "user"}).json()

    assert report["groups_truncated"] and [group["key"] for group in report["groups"]] == ["alice"]
    assert report["totals"] == ALL_OF_ACME


# --- one run ------------------------------------------------------------------------------------------------------


def test_a_runs_usage_lists_its_calls_and_totals(api_client: APIClient, usage_history: dict[str, Run]) -> None:
    run = usage_history["alice"]

    response = api_client.get(f"{URL}/runs/{run.pk}")

    body = response.json()
    assert (body["run_id"], body["conversation"]) == (str(run.pk), str(run.conversation_id))
    assert body["totals"] == {name: value for name, value in ALICE.items() if "runs" not in name}
    assert [(call["message_id"], call["model"], call["cost_usd"]) for call in body["calls"]] == [
        ("msg_1", "sonnet", "0.0128250000"),
        ("msg_2", "sonnet", "0.0010500000"),
    ]
    assert body["calls"][0]["cache_read_tokens"] == 5000


def test_a_run_of_another_end_user_is_404_with_x_user_id(tenant_key: str, usage_history: dict[str, Run]) -> None:
    bob = client_with_key(tenant_key, user_id="bob")

    error_of(bob.get(f"{URL}/runs/{usage_history['alice'].pk}"), 404)
    assert bob.get(f"{URL}/runs/{usage_history['bob'].pk}").status_code == 200


def test_a_malformed_run_id_is_404(api_client: APIClient, tenant: Tenant) -> None:
    error_of(api_client.get(f"{URL}/runs/not-a-uuid"), 404)


# --- schema -------------------------------------------------------------------------------------------------------


def test_the_usage_endpoints_are_in_the_openapi_schema(db: None) -> None:
    schema = yaml.safe_load(Client().get("/api/schema/").content)

    report = schema["paths"]["/api/tenants/{tenant}/usage/"]["get"]
    assert {p["name"] for p in report["parameters"]} == {"tenant", "from", "to", "group_by", "X-User-ID"}
    assert set(schema["components"]["schemas"]["UsageReport"]["properties"]) >= {"from", "to", "totals", "groups"}
    assert "get" in schema["paths"]["/api/tenants/{tenant}/usage/runs/{run_id}/"]
