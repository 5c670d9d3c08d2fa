import hashlib
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self, TypeVar
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9-]{0,62}$",
    "Use 1-63 lowercase letters, digits and hyphens, starting with a letter or digit.",
)

PER_MILLION = Decimal(1_000_000)
# The kinds of tokens a model call is billed for, each at its own price (see PriceList.cost).
TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens")
# The price of each kind, in the same order: USD per million tokens.
PRICE_FIELDS = ("input_price", "output_price", "cache_write_5m_price", "cache_write_1h_price", "cache_read_price")
# What the built-in offline model is called wherever a person reads it: it is not Claude.
OFFLINE_LABEL = "Offline model (not Claude)"


def normalize_usage(usage: dict[str, Any]) -> dict[str, int]:
    """Anthropic usage → our five token kinds. Without the 5 min / 1 h split, cache writes count as
    5-minute ones, as Anthropic bills them."""
    cache_creation = usage.get("cache_creation") or {}
    write_1h = int(cache_creation.get("ephemeral_1h_input_tokens") or 0)
    write_5m = cache_creation.get("ephemeral_5m_input_tokens")
    if write_5m is None:
        write_5m = max(int(usage.get("cache_creation_input_tokens") or 0) - write_1h, 0)
    return {
        "input_tokens": int(usage.get("input_tokens") or 0),
        "output_tokens": int(usage.get("output_tokens") or 0),
        "cache_write_5m_tokens": int(write_5m),
        "cache_write_1h_tokens": write_1h,
        "cache_read_tokens": int(usage.get("cache_read_input_tokens") or 0),
    }


class PriceList(models.Model):
    """The five prices of a model, USD per million tokens of each kind."""

    input_price = models.DecimalField(max_digits=12, decimal_places=6, default=0, validators=[MinValueValidator(0)])
    output_price = models.DecimalField(max_digits=12, decimal_places=6, default=0, validators=[MinValueValidator(0)])
    cache_write_5m_price = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, validators=[MinValueValidator(0)]
    )
    cache_write_1h_price = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, validators=[MinValueValidator(0)]
    )
    cache_read_price = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, validators=[MinValueValidator(0)]
    )

    class Meta:
        abstract = True

    def price_values(self) -> tuple[Decimal, ...]:
        """The five prices in PRICE_FIELDS order, as Decimals (whatever was assigned: str, int, Decimal)."""
        return tuple(Decimal(str(getattr(self, name))) for name in PRICE_FIELDS)

    def prices_by_field(self) -> dict[str, Decimal]:
        """The five prices by field name, to copy them onto another PriceList."""
        return dict(zip(PRICE_FIELDS, self.price_values(), strict=True))

    def cost(self, usage: dict[str, Any]) -> Decimal:
        """Cost in USD of one model call's usage (Anthropic usage keys) at these prices."""
        tokens = normalize_usage(usage)
        total = sum(
            (tokens[kind] * price for kind, price in zip(TOKEN_KINDS, self.price_values(), strict=True)), Decimal(0)
        )
        return total / PER_MILLION


class LanguageModelQuerySet(models.QuerySet["LanguageModel"]):
    def usable(self) -> "LanguageModelQuerySet":
        """The models `is_usable` holds for."""
        return self.filter(status=LanguageModel.Status.ACTIVE)

    def with_prices(self) -> "LanguageModelQuerySet":
        """Each model's price history in one more query (price_at and show_price_in_effect then ask nothing)."""
        return self.prefetch_related(models.Prefetch("prices", queryset=ModelPrice.objects.order_by("-effective_from")))


class LanguageModel(PriceList):
    """One entry of the model catalog: where a model is served and what it costs.

    Its five prices are the price list an operator edits. Calls are charged from the price history
    (`prices`, ModelPrice): saving changed prices through `tenants.services.save_language_model` adds a
    ModelPrice in effect from that moment, an operator may schedule one for a later moment, and a call
    is charged at the price in effect when it is made (`price_at`), which its UsageRecord keeps.
    """

    class Provider(models.TextChoices):
        ANTHROPIC = "anthropic", "Anthropic API"
        BEDROCK = "bedrock", "AWS Bedrock"
        OFFLINE = "offline", OFFLINE_LABEL

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DEPRECATED = "deprecated", "Deprecated"

    id = models.CharField(primary_key=True, max_length=63, validators=[slug_validator])
    display_name = models.CharField(max_length=200)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    provider_model_id = models.CharField(
        max_length=200, help_text="The id the provider knows the model by, e.g. claude-sonnet-4-5."
    )
    context_window = models.PositiveIntegerField(default=200_000)
    max_output_tokens = models.PositiveIntegerField(default=32_000)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LanguageModelQuerySet.as_manager()

    # The prices as last read from or written to the database (None: a new model, or prices not loaded), to tell
    # whether an edit changed them (`prices_edited`).
    _loaded_prices: tuple[Decimal, ...] | None = None

    class Meta:
        ordering = ["id"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.display_name

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save the row only: recording a price change is `tenants.services.save_language_model`'s work."""
        super().save(*args, **kwargs)
        update_fields = kwargs.get("update_fields")
        if update_fields is None or set(PRICE_FIELDS) <= set(update_fields):
            self._loaded_prices = self.price_values()

    @classmethod
    def from_db(cls, *args: Any, **kwargs: Any) -> Self:
        model = super().from_db(*args, **kwargs)
        if all(name in model.__dict__ for name in PRICE_FIELDS):
            model._loaded_prices = model.price_values()
        return model

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        fields = kwargs.get("fields", args[1] if len(args) > 1 else None)
        if fields is None or set(PRICE_FIELDS) <= set(fields):
            self._loaded_prices = self.price_values()

    @property
    def prices_edited(self) -> bool:
        """Whether its five prices differ from those last read or saved (a new model's always do)."""
        return self._loaded_prices is None or self.price_values() != self._loaded_prices

    @property
    def is_usable(self) -> bool:
        """New conversations, messages and tenant defaults may use it; a deprecated model keeps only its history."""
        return self.status == self.Status.ACTIVE

    def check_usable_as_default(self, current_default_id: str | None) -> None:
        """A tenant's default must be usable, or conversations would be created that refuse every message;
        a default that is already set may stay (the operator deprecated it since)."""
        if not self.is_usable and self.pk != current_default_id:
            raise ValidationError(f"Model '{self.pk}' is deprecated; choose an active model.")

    @property
    def is_offline(self) -> bool:
        return self.provider == self.Provider.OFFLINE

    def cost(self, usage: dict[str, Any]) -> Decimal:
        """Cost in USD of one model call's usage (Anthropic usage keys) at the price in effect now
        (not necessarily the price list's: see show_price_in_effect). A model not saved yet has no history:
        its price list is its price."""
        if self._state.adding:
            return super().cost(usage)
        return self.price_at(timezone.now()).cost(usage)

    def price_at(self, moment: datetime) -> "ModelPrice":
        """The price in effect at `moment`: the one with the latest `effective_from` not after it.

        A moment before the first price gets the first price. A model with no price history at all
        (rows written around `save_language_model`: save(), bulk_create, update()) gets its price list
        recorded, from its creation.
        """
        price = self.price_in_effect(moment)
        if price is None:
            price = self._first_price()
        if price is None:
            price, _ = ModelPrice.objects.get_or_create(
                model=self, effective_from=self.created_at, defaults=self.prices_by_field()
            )
        return price

    def show_price_in_effect(self) -> None:
        """Set the five prices to the price in effect now, as if read so from the database.

        The price list stays as an operator last saved it; once a price scheduled since comes into
        effect, the list is behind it until the next save. Pages and API answers show the price in
        effect, and edits start from it, so an edit never puts an outdated price back.
        """
        price = self.price_in_effect(timezone.now())
        if price is not None:
            for name, value in price.prices_by_field().items():
                setattr(self, name, value)
            self._loaded_prices = self.price_values()

    def _prefetched_prices(self) -> list["ModelPrice"] | None:
        cache = getattr(self, "_prefetched_objects_cache", {})
        return list(cache["prices"]) if "prices" in cache else None

    def forget_prefetched_prices(self) -> None:
        """Read the price history from the database from now on: a prefetched copy may be older than a change."""
        getattr(self, "_prefetched_objects_cache", {}).pop("prices", None)

    def price_in_effect(self, moment: datetime) -> "ModelPrice | None":
        """The price in effect at `moment`, or None before the first price (or with no history yet)."""
        prefetched = self._prefetched_prices()
        if prefetched is not None:
            past = [price for price in prefetched if price.effective_from <= moment]
            return max(past, key=lambda price: price.effective_from, default=None)
        return self.prices.filter(effective_from__lte=moment).order_by("-effective_from").first()

    def _first_price(self) -> "ModelPrice | None":
        prefetched = self._prefetched_prices()
        if prefetched is not None:
            return min(prefetched, key=lambda price: price.effective_from, default=None)
        return self.prices.order_by("effective_from").first()


class ModelPrice(PriceList):
    """A model's prices from `effective_from` on, until its next ModelPrice; the history of its price list.

    Usage records point at the price they were charged at, so a price that has charged a call is
    never deleted (PROTECT) and reports never re-price the past. A price not yet in effect is a
    scheduled one, which an operator may still change or drop.
    """

    model = models.ForeignKey(LanguageModel, on_delete=models.CASCADE, related_name="prices")
    effective_from = models.DateTimeField(help_text="When these prices take effect; they hold until the next ones.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        verbose_name = "price"
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"], name="model_price_once_per_moment"),
        ]

    def __str__(self) -> str:
        return f"{self.model_id} from {self.effective_from.astimezone(UTC):%Y-%m-%d %H:%M} UTC"

    @property
    def is_scheduled(self) -> bool:
        return self.effective_from > timezone.now()


def usd_limit(verbose_name: str, help_text: str) -> models.DecimalField:
    """A budget in USD at catalog prices; empty means unlimited."""
    return models.DecimalField(
        verbose_name,
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text=f"{help_text} Empty: unlimited.",
    )


def calls_limit(verbose_name: str, help_text: str) -> models.PositiveIntegerField:
    """A budget in model calls; empty means unlimited."""
    return models.PositiveIntegerField(verbose_name, null=True, blank=True, help_text=f"{help_text} Empty: unlimited.")


class TenantQuerySet(models.QuerySet["Tenant"]):
    def active(self) -> "TenantQuerySet":
        return self.filter(status=Tenant.Status.ACTIVE)


def validate_time_zone(value: str) -> None:
    if value not in available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone name, such as Europe/Paris or UTC.")


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        INACTIVE = "inactive", "Inactive"

    id = models.CharField(primary_key=True, max_length=63, validators=[slug_validator])
    name = models.CharField(max_length=200)
    # What an agent profile runs on when it names no model (the instructions live in the profiles: agents app).
    default_model = models.ForeignKey(
        LanguageModel,
        on_delete=models.PROTECT,
        related_name="tenants",
        help_text="The model of agent profiles that name none.",
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    # The default budget of each run in this tenant (a request may override it); empty = unlimited.
    run_budget_usd = models.DecimalField(
        "run budget (USD)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Most a run may spend, in USD at catalog prices. Empty: unlimited.",
    )
    run_budget_calls = models.PositiveIntegerField(
        "run budget (model calls)",
        null=True,
        blank=True,
        help_text="Most model calls a run may make. Empty: unlimited.",
    )
    chat_shows_cost = models.BooleanField(
        default=False, help_text="The chat page shows its end users what each run cost."
    )
    # Budgets beyond the run's, enforced by the gateway before each model call (usage.budgets);
    # empty = unlimited. Months and days begin where the tenant lives (time_zone).
    monthly_budget_usd = usd_limit("monthly budget (USD)", "Most the whole tenant may spend per calendar month.")
    monthly_budget_calls = calls_limit("monthly budget (model calls)", "Most model calls per calendar month.")
    user_daily_budget_usd = usd_limit("daily budget per end user (USD)", "Each end user's default, per day.")
    user_daily_budget_calls = calls_limit("daily budget per end user (model calls)", "Each end user's default.")
    user_monthly_budget_usd = usd_limit("monthly budget per end user (USD)", "Each end user's default, per month.")
    user_monthly_budget_calls = calls_limit("monthly budget per end user (model calls)", "Each end user's default.")
    conversation_budget_usd = usd_limit("conversation budget (USD)", "Most one conversation may spend, in all.")
    conversation_budget_calls = calls_limit("conversation budget (model calls)", "Most calls of one conversation.")
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="Where the tenant's days, weeks and months begin in its usage reports (an IANA name).",
    )
    # Rate limits, counted per minute across every web process (tenants.ratelimit); empty = unlimited.
    api_requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="API requests of the whole tenant per minute. Empty: unlimited."
    )
    user_api_requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="API requests of each end user per minute. Empty: unlimited."
    )
    runs_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Runs the whole tenant may start per minute. Empty: unlimited."
    )
    user_runs_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Runs each end user may start per minute. Empty: unlimited."
    )
    # Where its runs' sandboxes may connect, through the run's egress proxy (gateway.allowlist has the rule
    # syntax; agents.egress checks both fields): empty = nothing leaves the sandbox, the safe default.
    egress_allowlist = models.JSONField(
        "egress allow-list",
        default=list,
        blank=True,
        help_text="Where its agents' sandboxes may connect: host names, *.wildcards, addresses, networks, ports. "
        "Empty: nowhere.",
    )
    egress_headers = models.JSONField(
        default=dict,
        blank=True,
        help_text="Headers the egress proxy adds to requests for a host, values naming the tenant's secrets as "
        "${name}: the sandbox never holds them.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


KEY_PREFIX = "ak_"


def hash_key(raw_key: str) -> str:
    # Keys are 256-bit random tokens, so a fast unsalted hash is enough: there is nothing to
    # brute-force, and the lookup must stay one indexed query per request.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def live(self) -> "ApiKeyQuerySet":
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """An API key, stored as a hash. Admin keys (no tenant) have platform scope."""

    name = models.CharField(max_length=200)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=16, help_text="The key's first characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def issue(cls, name: str, tenant: Tenant | None = None) -> tuple["ApiKey", str]:
        """Create a key and return it with its raw value, which is never stored and shown once."""
        raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(name=name, tenant=tenant, prefix=raw_key[:10], key_hash=hash_key(raw_key))
        return key, raw_key

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def touch(self) -> None:
        """Record use, at most once a minute so that authentication stays a read."""
        now = timezone.now()
        if self.last_used_at is None or (now - self.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now


Granted = TypeVar("Granted", bound=models.Model)


class GrantedQuerySet(models.QuerySet[Granted]):
    """Rows a tenant owns (skills, MCP servers), or platform rows (no tenant) an operator grants to every
    tenant (`all_tenants`) or to chosen ones (`granted_to`); by `name`, a tenant's own row wins."""

    def available_to(self, tenant: Tenant) -> Self:
        """The tenant's own rows and the platform rows granted to it."""
        granted = models.Q(tenant__isnull=True) & (models.Q(all_tenants=True) | models.Q(granted_to=tenant))
        return self.filter(models.Q(tenant=tenant) | granted).distinct()

    def seen_by(self, tenant: Tenant) -> Self:
        """What the tenant sees: the rows available to it, less a platform row whose name its own row has."""
        own = self.model._default_manager.filter(tenant=tenant).values("name")
        return self.available_to(tenant).exclude(tenant__isnull=True, name__in=own)

    def by_name(self, tenant: Tenant) -> dict[str, Granted]:
        """The rows the tenant sees, by name (one query)."""
        return {row.name: row for row in self.seen_by(tenant)}  # type: ignore[attr-defined]
