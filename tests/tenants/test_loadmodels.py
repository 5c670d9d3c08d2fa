"""`manage.py loadmodels` fills the catalog from the data file in the repository, idempotently, and a changed price
in the file applies from then on."""

import io
import re
import tomllib
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from tenants.catalog import DEFAULT_FILE, read_catalog_file
from tenants.models import LanguageModel, ModelPrice
from tenants.services import ensure_offline_model
from tests.clock import at

pytestmark = pytest.mark.django_db

UTC = ZoneInfo("UTC")

ONE_MODEL = """
as_of = 2026-11-01
source = "https://platform.claude.com/docs/en/about-claude/pricing"

[[models]]
id = "claude-sonnet-4-5"
name = "Claude Sonnet 4.5"
anthropic = "claude-sonnet-4-5-20250929"
bedrock = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
context_window = 200_000
max_output_tokens = 64_000
prices = {{ input = {input}, output = 15, cache_write_5m = 3.75, cache_write_1h = 6, cache_read = 0.30 }}
{extra}
"""


def data_file(tmp_path: Path, input: str = "3", extra: str = "") -> Path:
    path = tmp_path / "models.toml"
    path.write_text(ONE_MODEL.format(input=input, extra=extra))
    return path


def load(*args: str, **options: object) -> str:
    out = io.StringIO()
    call_command("loadmodels", *args, stdout=out, **options)
    return out.getvalue()


def catalog() -> dict[str, tuple[object, ...]]:
    """Every model's fields and price history, to compare the catalog before and after."""
    return {
        model.pk: (
            model.display_name,
            model.provider,
            model.provider_model_id,
            model.status,
            model.context_window,
            model.max_output_tokens,
            model.price_values(),
            tuple((price.effective_from, price.price_values()) for price in model.prices.order_by("effective_from")),
        )
        for model in LanguageModel.objects.all()
    }


def test_the_repositorys_file_loads_the_claude_models_on_both_providers_and_a_second_run_changes_nothing(
    offline_model: LanguageModel,
) -> None:
    offline_before = catalog()["offline"]

    first = load()
    after_first = catalog()
    second = load()

    entries = read_catalog_file().entries
    assert len(entries) == 18 and {entry.provider for entry in entries} == {"anthropic", "bedrock"}
    sonnet = LanguageModel.objects.get(pk="claude-sonnet-4-5")
    assert (sonnet.provider, sonnet.provider_model_id) == ("anthropic", "claude-sonnet-4-5-20250929")
    assert sonnet.price_values() == tuple(Decimal(p) for p in ("3", "15", "3.75", "6", "0.3"))
    bedrock = LanguageModel.objects.get(pk="bedrock-claude-sonnet-4-5")
    assert (bedrock.provider, bedrock.provider_model_id) == (
        "bedrock",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
    )
    assert bedrock.display_name == "Claude Sonnet 4.5 (Bedrock)"
    assert LanguageModel.objects.get(pk="claude-opus-4-5").price_values() == tuple(
        Decimal(p) for p in ("5", "25", "6.25", "10", "0.5")
    )
    assert LanguageModel.objects.get(pk="claude-haiku-3-5").max_output_tokens == 8192
    assert "18 created, 0 updated, 0 unchanged, 0 skipped" in first
    assert (
        "created   claude-sonnet-4-5: Claude Sonnet 4.5, anthropic claude-sonnet-4-5-20250929, at 3 / 15 / 3.75 / 6 / 0.3"
        in first
    )
    assert "0 created, 0 updated, 18 unchanged" in second
    assert catalog() == after_first
    assert catalog()["offline"] == offline_before
    assert ModelPrice.objects.count() == 18 + 1


def test_the_data_file_is_dated_and_says_where_its_prices_come_from() -> None:
    data = tomllib.loads(DEFAULT_FILE.read_text())

    assert data["as_of"].year >= 2026
    assert data["source"].startswith("https://")


def test_a_changed_price_in_the_file_is_a_new_price_from_now(tmp_path: Path) -> None:
    with at(datetime(2026, 11, 1, tzinfo=UTC)):
        load(file=data_file(tmp_path))
    changed = data_file(tmp_path, input="2.5")

    with at(datetime(2026, 11, 15, tzinfo=UTC)):
        preview = load(file=changed, dry_run=True)
        assert LanguageModel.objects.get(pk="claude-sonnet-4-5").input_price == Decimal("3")
        output = load(file=changed)
        again = load(file=changed)

    assert "updated   claude-sonnet-4-5: prices 3 / 15 / 3.75 / 6 / 0.3 → 2.5 / 15 / 3.75 / 6 / 0.3 from now" in output
    assert preview.startswith("Dry run, nothing is saved.") and "→ 2.5 / 15" in preview
    assert "Would have: 0 created, 2 updated" in preview
    assert "0 created, 0 updated, 2 unchanged" in again
    model = LanguageModel.objects.get(pk="claude-sonnet-4-5")
    assert [(price.effective_from.day, price.input_price) for price in model.prices.order_by("effective_from")] == [
        (1, Decimal("3")),
        (15, Decimal("2.5")),
    ]


def test_a_price_change_the_file_dates_later_is_scheduled_for_then(tmp_path: Path) -> None:
    load(file=data_file(tmp_path))
    later = (timezone.now() + timedelta(days=10)).replace(microsecond=0)
    dated = data_file(tmp_path, input="2", extra=f"prices_from = {later.isoformat()}")

    output = load(file=dated, provider=["anthropic"])
    again = load(file=dated, provider=["anthropic"])

    assert f"prices 3 / 15 / 3.75 / 6 / 0.3 → 2 / 15 / 3.75 / 6 / 0.3 from {later:%Y-%m-%d %H:%M} UTC" in output
    assert "1 unchanged" in again
    model = LanguageModel.objects.get(pk="claude-sonnet-4-5")
    assert model.input_price == Decimal("3") and model.price_at(timezone.now()).input_price == Decimal("3")
    assert model.price_at(later).input_price == Decimal("2")
    assert LanguageModel.objects.get(pk="bedrock-claude-sonnet-4-5").prices.count() == 1  # not loaded this time


def test_it_never_deletes_a_model_keeps_an_operators_choices_and_says_what_it_left(
    tmp_path: Path, offline_model: LanguageModel
) -> None:
    load(file=data_file(tmp_path))
    LanguageModel.objects.create(id="my-sonnet", display_name="Mine", provider="anthropic", provider_model_id="x")
    bedrock = LanguageModel.objects.get(pk="bedrock-claude-sonnet-4-5")
    bedrock.provider_model_id = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"  # data residency
    bedrock.status = LanguageModel.Status.DEPRECATED
    bedrock.save()

    output = load(file=data_file(tmp_path))

    assert "left      my-sonnet: not in the file, left as it is" in output
    assert "keeps its provider model id eu.anthropic.claude-sonnet-4-5-20250929-v1:0" in output
    assert "offline" not in output.replace("offline model", "")
    bedrock.refresh_from_db()
    assert (bedrock.provider_model_id, bedrock.status) == ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "deprecated")
    assert LanguageModel.objects.filter(pk__in=["my-sonnet", "offline"]).count() == 2


def test_an_entry_of_another_provider_is_left_alone(tmp_path: Path) -> None:
    LanguageModel.objects.create(
        id="claude-sonnet-4-5", display_name="Proxy", provider="bedrock", provider_model_id="x"
    )

    output = load(file=data_file(tmp_path), provider=["anthropic"])

    assert "skipped   claude-sonnet-4-5: it is a bedrock model here, the file's is anthropic" in output
    assert LanguageModel.objects.get(pk="claude-sonnet-4-5").display_name == "Proxy"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("colour = 'blue'", "unknown key(s) colour"),
        ("prices_from = 'soon'", "`prices_from` must be a TOML date"),
    ],
)
def test_a_file_the_catalog_cannot_hold_is_refused_before_anything_changes(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        load(file=data_file(tmp_path, extra=extra))

    assert not LanguageModel.objects.exists()


def test_a_negative_price_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="price `input` must be a number, 0 or more"):
        load(file=data_file(tmp_path, input="-1"))
    with pytest.raises(CommandError, match="No such file"):
        load(file=tmp_path / "missing.toml")
    ensure_offline_model()
    assert list(LanguageModel.objects.values_list("pk", flat=True)) == ["offline"]
