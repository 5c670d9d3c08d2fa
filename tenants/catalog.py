"""The data file of Claude models and their published prices (tenants/data/claude_models.toml), and bringing
the catalog in line with it (`manage.py loadmodels`)."""

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from tenants.models import PRICE_FIELDS, LanguageModel, ModelPrice, slug_validator
from tenants.services import OFFLINE_MODEL_ID, save_language_model

DEFAULT_FILE = Path(__file__).resolve().parent / "data" / "claude_models.toml"
BEDROCK_ID_PREFIX = "bedrock-"
# The file's names of the five prices, in PRICE_FIELDS order.
PRICE_KEYS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
REQUIRED_KEYS = {"id", "name", "context_window", "max_output_tokens", "prices"}
OPTIONAL_KEYS = {"anthropic", "bedrock", "prices_from"}
PROVIDER_KEYS = {LanguageModel.Provider.ANTHROPIC: "anthropic", LanguageModel.Provider.BEDROCK: "bedrock"}


class CatalogFileError(ValueError):
    """The data file cannot be read or says something the catalog cannot hold."""


@dataclass(frozen=True)
class CatalogEntry:
    """One catalog entry the file describes: a model on one provider."""

    id: str
    display_name: str
    provider: str
    provider_model_id: str
    context_window: int
    max_output_tokens: int
    prices: tuple[Decimal, ...]  # in PRICE_FIELDS order
    prices_from: datetime | None = None

    def prices_by_field(self) -> dict[str, Decimal]:
        return dict(zip(PRICE_FIELDS, self.prices, strict=True))


@dataclass(frozen=True)
class CatalogFile:
    as_of: date
    source: str
    entries: list[CatalogEntry]


@dataclass
class Outcome:
    """What loading one entry did (or, in a dry run, would do)."""

    action: str  # created, updated, unchanged, skipped
    model_id: str
    details: list[str] = field(default_factory=list)


def read_catalog_file(path: Path = DEFAULT_FILE) -> CatalogFile:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file, parse_float=Decimal)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogFileError(f"{path}: {exc}") from None
    as_of, source, models = data.get("as_of"), data.get("source"), data.get("models")
    if not isinstance(as_of, date) or isinstance(as_of, datetime):
        raise CatalogFileError(
            f"{path}: `as_of` must be the date the prices were published or checked, e.g. 2026-11-01."
        )
    if not isinstance(source, str) or not source:
        raise CatalogFileError(f"{path}: `source` must say where the prices come from (a URL).")
    if not isinstance(models, list) or not models:
        raise CatalogFileError(f"{path}: no [[models]] entries.")
    entries = [entry for number, model in enumerate(models, 1) for entry in _entries(model, f"{path}, model {number}")]
    seen: set[str] = set()
    for entry in entries:
        if entry.id in seen:
            raise CatalogFileError(f"{path}: catalog id '{entry.id}' appears twice.")
        seen.add(entry.id)
    return CatalogFile(as_of=as_of, source=source, entries=entries)


def _entries(model: Any, where: str) -> list[CatalogEntry]:
    if not isinstance(model, dict):
        raise CatalogFileError(f"{where}: not a table.")
    keys = set(model)
    if missing := REQUIRED_KEYS - keys:
        raise CatalogFileError(f"{where}: missing {', '.join(sorted(missing))}.")
    if unknown := keys - REQUIRED_KEYS - OPTIONAL_KEYS:
        raise CatalogFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.")
    where = f"{where} ({model['id']})"
    if not any(model.get(key) for key in PROVIDER_KEYS.values()):
        raise CatalogFileError(f"{where}: give its `anthropic` or `bedrock` model id, or both.")
    for key in ("id", "name", *PROVIDER_KEYS.values()):
        if key in model and not (isinstance(model[key], str) and model[key]):
            raise CatalogFileError(f"{where}: `{key}` must be a non-empty string.")
    for key in ("context_window", "max_output_tokens"):
        if not _is_number(model[key]) or not isinstance(model[key], int) or model[key] <= 0:
            raise CatalogFileError(f"{where}: `{key}` must be a positive whole number of tokens.")
    prices = _prices(model["prices"], where)
    prices_from = _moment(model["prices_from"], where) if "prices_from" in model else None
    entries = []
    for provider, key in PROVIDER_KEYS.items():
        if not model.get(key):
            continue
        catalog_id = model["id"] if provider == LanguageModel.Provider.ANTHROPIC else BEDROCK_ID_PREFIX + model["id"]
        try:
            slug_validator(catalog_id)
        except ValidationError:
            raise CatalogFileError(f"{where}: '{catalog_id}' is not a catalog id ({slug_validator.message})") from None
        if catalog_id == OFFLINE_MODEL_ID:
            raise CatalogFileError(f"{where}: '{OFFLINE_MODEL_ID}' is the offline model's id.")
        entries.append(
            CatalogEntry(
                id=catalog_id,
                display_name=model["name"]
                if provider == LanguageModel.Provider.ANTHROPIC
                else f"{model['name']} (Bedrock)",
                provider=provider,
                provider_model_id=model[key],
                context_window=model["context_window"],
                max_output_tokens=model["max_output_tokens"],
                prices=prices,
                prices_from=prices_from,
            )
        )
    return entries


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def _prices(prices: Any, where: str) -> tuple[Decimal, ...]:
    if not isinstance(prices, dict) or set(prices) != set(PRICE_KEYS):
        raise CatalogFileError(f"{where}: `prices` must give exactly {', '.join(PRICE_KEYS)} (USD per million tokens).")
    values = []
    for key in PRICE_KEYS:
        value = prices[key]
        if not _is_number(value) or value < 0:
            raise CatalogFileError(f"{where}: price `{key}` must be a number, 0 or more.")
        values.append(Decimal(value))
    return tuple(values)


def _moment(value: Any, where: str) -> datetime:
    """A date (midnight UTC) or date-time (UTC when it has no offset)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time.min, tzinfo=UTC)
    raise CatalogFileError(f"{where}: `prices_from` must be a TOML date or date-time, e.g. 2026-12-01.")


def format_prices(prices: tuple[Decimal, ...]) -> str:
    """Prices as 3 / 15 / 3.75 / 6 / 0.3 (PRICE_FIELDS order)."""
    return " / ".join(f"{price.normalize():f}" for price in prices)


def load_entry(entry: CatalogEntry) -> Outcome:
    """Bring the catalog's entry in line with the file's: create it, or update its name, limits and prices.

    A price that differs from the one in effect is recorded from now (save_language_model), or from the
    entry's `prices_from` when that is still to come (a new entry starts at the file's prices at once).
    The provider model id of an existing entry is kept (an operator may have chosen another inference
    profile), as is its status; an entry of another provider, or the offline model, is not touched.
    """
    model = LanguageModel.objects.filter(pk=entry.id).first()
    if model is None:
        model = LanguageModel(
            id=entry.id,
            display_name=entry.display_name,
            provider=entry.provider,
            provider_model_id=entry.provider_model_id,
            context_window=entry.context_window,
            max_output_tokens=entry.max_output_tokens,
            **entry.prices_by_field(),
        )
        _save(model)
        details = [
            f"{entry.display_name}, {entry.provider} {entry.provider_model_id}, at {format_prices(entry.prices)}"
        ]
        return Outcome("created", entry.id, details)
    if model.is_offline:
        return Outcome("skipped", entry.id, ["the offline model is never changed"])
    if model.provider != entry.provider:
        return Outcome("skipped", entry.id, [f"it is a {model.provider} model here, the file's is {entry.provider}"])
    model.show_price_in_effect()
    changes: list[str] = []
    for name in ("display_name", "context_window", "max_output_tokens"):
        old, new = getattr(model, name), getattr(entry, name)
        if old != new:
            changes.append(f"{name} {old} → {new}")
            setattr(model, name, new)
    now = timezone.now()
    if entry.prices_from is not None and entry.prices_from > now:
        then = model.price_at(entry.prices_from)
        if then.price_values() != entry.prices:
            ModelPrice.objects.update_or_create(
                model=model, effective_from=entry.prices_from, defaults=entry.prices_by_field()
            )
            changes.append(
                f"prices {format_prices(then.price_values())} → {format_prices(entry.prices)} "
                f"from {entry.prices_from:%Y-%m-%d %H:%M} UTC"
            )
    elif model.price_values() != entry.prices:
        changes.append(f"prices {format_prices(model.price_values())} → {format_prices(entry.prices)} from now")
        for name, price in entry.prices_by_field().items():
            setattr(model, name, price)
    notes = []
    if model.provider_model_id != entry.provider_model_id:
        notes.append(f"keeps its provider model id {model.provider_model_id} (the file's: {entry.provider_model_id})")
    if changes:
        _save(model)
        return Outcome("updated", entry.id, changes + notes)
    return Outcome("unchanged", entry.id, notes)


def _save(model: LanguageModel) -> None:
    try:
        model.full_clean()
    except ValidationError as exc:
        raise CatalogFileError(f"{model.pk}: {'; '.join(exc.messages)}") from None
    save_language_model(model)
