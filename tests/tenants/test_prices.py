"""The catalog's price history: a price change applies from its moment on, however it is made (the catalog
service, API, admin; loadmodels in test_loadmodels.py), and a price may be scheduled for later."""

import importlib
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import LanguageModel, ModelPrice
from tenants.services import OFFLINE_MODEL_ID, ensure_offline_model, save_language_model
from tests.clock import at
from tests.factories import SONNET_PRICES, SPLIT_USAGE

pytestmark = pytest.mark.django_db

UTC = ZoneInfo("UTC")
T0 = datetime(2026, 10, 1, tzinfo=UTC)
T1 = datetime(2026, 10, 10, tzinfo=UTC)
T2 = datetime(2026, 10, 20, tzinfo=UTC)


def make_model(model_id: str = "sonnet", **prices: object) -> LanguageModel:
    save_language_model(
        LanguageModel(
            id=model_id,
            display_name="Claude Sonnet",
            provider="anthropic",
            provider_model_id="claude-sonnet-4-5",
            **{**SONNET_PRICES, **prices},
        )
    )
    return LanguageModel.objects.get(pk=model_id)


def history(model: LanguageModel) -> list[tuple[datetime, Decimal]]:
    return [(price.effective_from, price.input_price) for price in model.prices.order_by("effective_from")]


# --- The catalog service -----------------------------------------------------------------------------


def test_a_new_model_has_its_prices_in_effect_from_its_creation() -> None:
    with at(T0):
        model = make_model()

    assert history(model) == [(T0, Decimal("3"))]
    assert model.price_at(T0).price_values() == model.price_values()
    assert model.price_at(T0).cost(SPLIT_USAGE) == model.cost(SPLIT_USAGE) == Decimal("0.01785")


def test_changed_prices_apply_from_the_save_and_other_saves_record_no_price() -> None:
    with at(T0):
        model = make_model()
    with at(T1):
        model.display_name = "Sonnet"
        save_language_model(model)
        model.status = LanguageModel.Status.DEPRECATED
        save_language_model(model)
    with at(T2):
        model.input_price = Decimal("2.5")
        save_language_model(model)
        save_language_model(model)  # saved again as it is

    assert history(model) == [(T0, Decimal("3")), (T2, Decimal("2.5"))]
    assert model.price_at(T2 - timedelta(microseconds=1)).input_price == Decimal("3")
    assert model.price_at(T2).input_price == Decimal("2.5")
    assert model.price_at(T0 - timedelta(days=1)).effective_from == T0  # before the first price: the first


def test_a_scheduled_price_takes_effect_at_its_moment_and_the_list_follows_it() -> None:
    with at(T0):
        model = make_model()
    ModelPrice.objects.create(model=model, effective_from=T1, **{**SONNET_PRICES, "input_price": Decimal("1")})

    with at(T2):
        listed = LanguageModel.objects.get(pk="sonnet")
        assert listed.input_price == Decimal("3")  # the list as last saved
        assert listed.cost({"input_tokens": 1_000_000}) == Decimal("1")  # the price in effect
        listed.show_price_in_effect()
        assert listed.input_price == Decimal("1")
        # An edit of something else neither records the outdated list price nor keeps it.
        edited = LanguageModel.objects.get(pk="sonnet")
        edited.display_name = "Sonnet"
        save_language_model(edited)

    assert history(model) == [(T0, Decimal("3")), (T1, Decimal("1"))]
    assert LanguageModel.objects.get(pk="sonnet").input_price == Decimal("1")


def test_a_model_read_again_edits_from_the_prices_it_read() -> None:
    with at(T0):
        model = make_model()
    with at(T1):
        elsewhere = LanguageModel.objects.get(pk="sonnet")
        elsewhere.input_price = Decimal("5")
        save_language_model(elsewhere)
    ModelPrice.objects.create(model=model, effective_from=T2, **{**SONNET_PRICES, "input_price": Decimal("1")})

    model.refresh_from_db()
    with at(T2 + timedelta(days=1)):
        model.display_name = "Sonnet"
        save_language_model(model)

    assert history(model) == [(T0, Decimal("3")), (T1, Decimal("5")), (T2, Decimal("1"))]


def test_the_offline_model_made_on_first_use_has_its_first_price(db: None) -> None:
    LanguageModel.objects.filter(pk=OFFLINE_MODEL_ID).delete()

    model = ensure_offline_model()

    assert [(price.effective_from, price.input_price) for price in model.prices.all()] == [
        (model.created_at, Decimal("0"))
    ]


def test_saving_the_row_alone_records_no_price_the_catalog_service_does() -> None:
    with at(T0):
        model = make_model()

    with at(T1):
        model.input_price = Decimal("2.5")
        model.save()

    assert history(model) == [(T0, Decimal("3"))]
    assert model.price_at(T1).input_price == Decimal("3")


def test_a_model_written_around_the_catalog_service_gets_its_list_price_as_its_first_price() -> None:
    LanguageModel.objects.bulk_create(
        [LanguageModel(id="bulk", display_name="Bulk", provider="anthropic", input_price=7)]
    )
    model = LanguageModel.objects.get(pk="bulk")

    price = model.price_at(timezone.now())

    assert (price.effective_from, price.input_price) == (model.created_at, Decimal("7"))
    assert model.prices.count() == 1


def test_the_migration_gives_every_model_its_prices_as_its_first_price() -> None:
    migration = importlib.import_module("tenants.migrations.0007_model_prices")
    LanguageModel.objects.bulk_create(
        [
            LanguageModel(id="old-a", display_name="A", provider="anthropic", input_price=3, cache_read_price="0.3"),
            LanguageModel(id="old-b", display_name="B", provider="bedrock", output_price=75),
        ]
    )

    migration.first_prices(apps, None)

    for model in LanguageModel.objects.filter(pk__in=["old-a", "old-b"]):
        (price,) = model.prices.all()
        assert price.effective_from == model.created_at
        assert price.price_values() == model.price_values()


# --- The REST API ------------------------------------------------------------------------------------


def test_changing_a_price_by_api_records_it_from_now_and_shows_the_history(admin_api_client: APIClient) -> None:
    with at(T0):
        make_model()

    response = admin_api_client.patch("/api/models/sonnet", {"input_price": "2.5"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert Decimal(body["input_price"]) == Decimal("2.5")
    newest, first = body["prices"]
    assert Decimal(newest["input_price"]) == Decimal("2.5") and first["effective_from"] == "2026-10-01T00:00:00Z"
    assert Decimal(first["input_price"]) == Decimal("3")
    assert len(admin_api_client.get("/api/models/sonnet").json()["prices"]) == 2


def test_a_new_model_by_api_has_its_first_price(admin_api_client: APIClient, db: None) -> None:
    response = admin_api_client.post(
        "/api/models",
        {
            "id": "haiku",
            "display_name": "Haiku",
            "provider": "anthropic",
            "provider_model_id": "claude-haiku-4-5",
            "input_price": "1",
            "output_price": "5",
        },
        format="json",
    )

    assert response.status_code == 201
    (price,) = response.json()["prices"]
    assert (Decimal(price["input_price"]), Decimal(price["output_price"])) == (Decimal("1"), Decimal("5"))


def test_the_api_shows_and_edits_the_price_in_effect_after_a_scheduled_one_took_effect(
    admin_api_client: APIClient,
) -> None:
    with at(T0):
        make_model()
    ModelPrice.objects.create(model_id="sonnet", effective_from=T1, **{**SONNET_PRICES, "input_price": Decimal("1")})

    shown = admin_api_client.get("/api/models").json()["results"][0]
    renamed = admin_api_client.patch("/api/models/sonnet", {"display_name": "Sonnet"}, format="json").json()
    back = admin_api_client.patch("/api/models/sonnet", {"input_price": "3"}, format="json").json()

    assert Decimal(shown["input_price"]) == Decimal(renamed["input_price"]) == Decimal("1")
    assert Decimal(back["input_price"]) == Decimal("3")  # an explicit return to the old price is a change
    assert [Decimal(price["input_price"]) for price in back["prices"]] == [Decimal("3"), Decimal("1"), Decimal("3")]


# --- The admin ---------------------------------------------------------------------------------------

# The change form's read-only history inline and its scheduled-prices inline (prefix "prices-2").
NO_HISTORY_ROWS = {"prices-TOTAL_FORMS": "0", "prices-INITIAL_FORMS": "0"}


def change_form(model: LanguageModel, **fields: object) -> dict[str, object]:
    data: dict[str, object] = {
        "display_name": model.display_name,
        "provider": model.provider,
        "provider_model_id": model.provider_model_id,
        "status": model.status,
        "context_window": model.context_window,
        "max_output_tokens": model.max_output_tokens,
        **{name: str(value) for name, value in model.prices_by_field().items()},
        **NO_HISTORY_ROWS,
        "prices-2-TOTAL_FORMS": "0",
        "prices-2-INITIAL_FORMS": "0",
    }
    return {**data, **fields}


def scheduled_row(n: int, moment: datetime, **prices: object) -> dict[str, object]:
    return {
        f"prices-2-{n}-effective_from_0": moment.strftime("%Y-%m-%d"),
        f"prices-2-{n}-effective_from_1": moment.strftime("%H:%M:%S"),
        **{f"prices-2-{n}-{name}": value for name, value in {**SONNET_PRICES, **prices}.items()},
    }


def change_url(model: LanguageModel) -> str:
    return reverse("admin:tenants_languagemodel_change", args=[model.pk])


def test_the_model_page_shows_its_price_history(admin_client: Client) -> None:
    with at(T0):
        model = make_model()
    with at(T1):
        model.input_price = Decimal("2.5")
        save_language_model(model)

    page = admin_client.get(change_url(model))

    history_inline, scheduled_inline = page.context["inline_admin_formsets"]
    assert [price.input_price for price in history_inline.formset.queryset] == [Decimal("2.5"), Decimal("3")]
    assert list(scheduled_inline.formset.queryset) == []
    assert b"Price history" in page.content and b"Scheduled prices" in page.content


def test_an_operator_changes_a_price_in_the_admin_from_now_on(admin_client: Client) -> None:
    with at(T0):
        model = make_model()

    response = admin_client.post(change_url(model), change_form(model, input_price="2.5"))

    assert response.status_code == 302
    assert [price for _, price in history(model)] == [Decimal("3"), Decimal("2.5")]


def test_an_operator_schedules_a_price_for_later_but_not_for_the_past(admin_client: Client) -> None:
    model = make_model()
    later = (timezone.now() + timedelta(days=3)).replace(microsecond=0)

    past = admin_client.post(
        change_url(model),
        change_form(model, **{"prices-2-TOTAL_FORMS": "1"}, **scheduled_row(0, T0, input_price="9")),
    )
    scheduled = admin_client.post(
        change_url(model),
        change_form(model, **{"prices-2-TOTAL_FORMS": "1"}, **scheduled_row(0, later, input_price="2")),
    )

    assert past.status_code == 200 and "starts later than now" in str(
        past.context["inline_admin_formsets"][1].formset.errors
    )
    assert scheduled.status_code == 302
    assert [(moment, price) for moment, price in history(model)][1:] == [(later, Decimal("2"))]
    assert model.price_at(timezone.now()).input_price == Decimal("3")
    assert model.price_at(later).input_price == Decimal("2")
