"""The budgets' counters in the database, for usage.budgets: on PostgreSQL each step is one statement
(a call's budgets cost it two round trips at the gateway: functions in the database, migration 0005,
planned once per connection); elsewhere (SQLite, on a newcomer's machine,
where writers take turns anyway) the same steps through the ORM.

Counters are always locked in the order of their keys (level, subject, period), by every step, so
that parallel calls queue instead of deadlocking.
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest

from tenants.models import ModelPrice, Tenant
from usage.models import BudgetCounter, BudgetReservation, UserBudget

Key = tuple[str, str, str]  # level, subject, period


def fast() -> bool:
    """Whether the database takes the PostgreSQL statements."""
    return connection.vendor == "postgresql"


@dataclass(frozen=True)
class Terms:
    """What the database says about a call: the tenant's time zone and limits (the end user's own in place
    of the tenant's defaults), and the model's prices in effect (None without a price history)."""

    time_zone: str
    month_usd: Decimal | None
    month_calls: int | None
    user_day_usd: Decimal | None
    user_day_calls: int | None
    user_month_usd: Decimal | None
    user_month_calls: int | None
    input_prices: tuple[Decimal, Decimal, Decimal] | None  # plain, 5-minute and 1-hour cache writes
    output_price: Decimal | None


# PostgreSQL's budget_terms (migration 0005), planned once per connection: every model call reads it.
TERMS_SQL = "SELECT * FROM budget_terms(%(tenant)s, %(user)s, %(model)s, %(moment)s)"


def read_terms(tenant_id: str, user_id: str, model_id: str, moment: datetime) -> Terms:
    """What caps a call and what it is priced at, read afresh, so that an operator's change applies to it."""
    if fast():
        with connection.cursor() as cursor:
            cursor.execute(TERMS_SQL, {"user": user_id, "model": model_id, "moment": moment, "tenant": tenant_id})
            zone, month_usd, month_calls, day_usd, day_calls, user_month_usd, user_month_calls, *prices = (
                cursor.fetchone()
            )
        input_prices = None if prices[0] is None else (prices[0], prices[1], prices[2])
        return Terms(
            zone, month_usd, month_calls, day_usd, day_calls, user_month_usd, user_month_calls, input_prices, prices[3]
        )
    tenant = Tenant.objects.get(pk=tenant_id)
    own = UserBudget.objects.filter(tenant=tenant, user_id=user_id).first() or UserBudget()
    price = ModelPrice.objects.filter(model_id=model_id, effective_from__lte=moment).order_by("-effective_from").first()
    return Terms(
        tenant.time_zone,
        tenant.monthly_budget_usd,
        tenant.monthly_budget_calls,
        own_or_default(own.daily_usd, tenant.user_daily_budget_usd),
        own_or_default(own.daily_calls, tenant.user_daily_budget_calls),
        own_or_default(own.monthly_usd, tenant.user_monthly_budget_usd),
        own_or_default(own.monthly_calls, tenant.user_monthly_budget_calls),
        None if price is None else (price.input_price, price.cache_write_5m_price, price.cache_write_1h_price),
        None if price is None else price.output_price,
    )


def own_or_default(own: Any, default: Any) -> Any:
    """An end user's own budget where it has one (even 0), else the tenant's default."""
    return default if own is None else own


@dataclass(frozen=True)
class Cap:
    """One budget that caps a call: its counter's key and its limits (None: that dimension is unlimited)."""

    key: Key
    usd: Decimal | None
    calls: int | None

    @property
    def level(self) -> str:
        return self.key[0]

    @property
    def period(self) -> str:
        return self.key[2]

    def fits(self, counter: BudgetCounter, usd: Decimal) -> bool:
        """Whether one more call of `usd` fits beside what the counter has spent and holds."""
        return (self.calls is None or counter.calls + counter.reserved_calls + 1 <= self.calls) and (
            self.usd is None or counter.spent_usd + counter.reserved_usd + usd <= self.usd
        )


# Locks the counters in key order and, only if one more call of `usd` fits every cap (as Cap.fits
# decides), adds it to each and records the reservation: PostgreSQL's budget_hold (migration 0005).
# It returns the counters as they were before; fewer rows than caps means some are still to be made.
HOLD_SQL = """
SELECT * FROM budget_hold(
    %(tenant)s, %(run)s, %(usd)s, %(keys)s::jsonb,
    %(levels)s::text[], %(subjects)s::text[], %(periods)s::text[], %(usd_limits)s::numeric[], %(call_limits)s::bigint[]
)
"""

# A reservation lives as long as its call: it need not wait for the disk. Were PostgreSQL to crash
# in the moment before its write reached the disk, the reservation would be gone with the counters'
# share of it (one transaction, lost whole), and the call's recorded cost would still count.
WITHOUT_WAITING_FOR_THE_DISK = "SET LOCAL synchronous_commit TO OFF;"

ENSURE_SQL = """
INSERT INTO usage_budgetcounter (tenant_id, level, subject, period, spent_usd, calls, reserved_usd, reserved_calls, updated_at)
SELECT %(tenant)s, level, subject, period, 0, 0, 0, 0, now()
FROM unnest(%(levels)s::text[], %(subjects)s::text[], %(periods)s::text[]) AS k(level, subject, period)
ORDER BY level, subject, period
ON CONFLICT (tenant_id, level, subject, period) DO NOTHING
"""


def hold(tenant_id: str, run_id: Any, caps: Sequence[Cap], usd: Decimal) -> tuple[dict[Key, BudgetCounter], int | None]:
    """Hold `usd` and one call on the counters of `caps` if it fits every cap, all or nothing.

    The counters as they were, and the reservation's id (None when a cap would have been passed).
    """
    keys = [cap.key for cap in caps]
    if not fast():
        with transaction.atomic():
            counters = _locked(tenant_id, keys)
            if not all(cap.fits(counters[cap.key], usd) for cap in caps):
                return counters, None
            BudgetCounter.objects.filter(pk__in=[counter.pk for counter in counters.values()]).update(
                reserved_usd=F("reserved_usd") + usd, reserved_calls=F("reserved_calls") + 1
            )
            reservation = BudgetReservation.objects.create(run_id=run_id, usd=usd, keys=[list(key) for key in keys])
            return counters, reservation.pk
    params: dict[str, Any] = {
        "tenant": tenant_id,
        "usd": usd,
        "run": run_id,
        "keys": json.dumps(keys),
        "usd_limits": [cap.usd for cap in caps],
        "call_limits": [cap.calls for cap in caps],
        **_columns(keys),
    }
    with connection.cursor() as cursor:
        rows = _hold_rows(cursor, params)
        if len(rows) < len(caps):  # the first call of a period (or of a conversation, a run, a user)
            cursor.execute(ENSURE_SQL, {"tenant": tenant_id, **_columns(keys)})
            rows = _hold_rows(cursor, params)
    counters = {
        (row[0], row[1], row[2]): BudgetCounter(
            spent_usd=row[3], calls=row[4], reserved_usd=row[5], reserved_calls=row[6]
        )
        for row in rows
    }
    return counters, rows[0][7]


def _hold_rows(cursor: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    if connection.in_atomic_block:  # the setting would last as long as the caller's transaction
        cursor.execute(HOLD_SQL, params)
        return list(cursor.fetchall())
    cursor.execute(WITHOUT_WAITING_FOR_THE_DISK + HOLD_SQL, params)
    cursor.nextset()
    return list(cursor.fetchall())


# Counts one recorded call on the counters of its keys (made as needed, in key order) and gives its
# reservation back, if it had one: PostgreSQL's budget_settle (migration 0005).
SETTLE_SQL = """
SELECT budget_settle(%(tenant)s, %(usd)s, %(levels)s::text[], %(subjects)s::text[], %(periods)s::text[], %(reservation)s)
"""


def settle(tenant_id: str, keys: Sequence[Key], usd: Decimal, reservation_id: int | None) -> None:
    """Count one recorded call of `usd` on the counters of `keys` (made as needed), in place of its reservation."""
    if fast():
        with connection.cursor() as cursor:
            params = {"tenant": tenant_id, "usd": usd, "reservation": reservation_id, **_columns(keys)}
            cursor.execute(SETTLE_SQL, params)
        return
    with transaction.atomic():
        counters = _locked(tenant_id, keys)
        BudgetCounter.objects.filter(pk__in=[counter.pk for counter in counters.values()]).update(
            spent_usd=F("spent_usd") + usd, calls=F("calls") + 1
        )
        if reservation_id is not None:
            give_back(reservation_id, tenant_id)


# Deletes the reservation (once) and takes its share off the counters it held, locked in key order:
# PostgreSQL's budget_give_back (migration 0005).
GIVE_BACK_SQL = "SELECT budget_give_back(%(reservation)s, %(tenant)s)"


def give_back(reservation_id: int, tenant_id: str) -> None:
    """Delete the reservation and take its share off its counters; nothing if it is already gone."""
    if fast():
        with connection.cursor() as cursor:
            cursor.execute(GIVE_BACK_SQL, {"reservation": reservation_id, "tenant": tenant_id})
        return
    with transaction.atomic():
        reservation = BudgetReservation.objects.select_for_update().filter(pk=reservation_id).first()
        if reservation is None:
            return
        reservation.delete()
        counters = _locked(tenant_id, [(level, subject, period) for level, subject, period in reservation.keys])
        BudgetCounter.objects.filter(pk__in=[counter.pk for counter in counters.values()]).update(
            reserved_usd=Greatest(F("reserved_usd") - reservation.usd, Decimal(0)),
            reserved_calls=Greatest(F("reserved_calls") - 1, 0),
        )


def _columns(keys: Iterable[Key]) -> dict[str, list[str]]:
    """Counter keys as the three arrays the statements unnest."""
    levels, subjects, periods = zip(*keys, strict=True)
    return {"levels": list(levels), "subjects": list(subjects), "periods": list(periods)}


def _locked(tenant_id: str, keys: Sequence[Key]) -> dict[Key, BudgetCounter]:
    """The tenant's counters of `keys`, made as needed and locked in key order."""
    wanted = sorted(set(keys))
    BudgetCounter.objects.bulk_create(
        [
            BudgetCounter(tenant_id=tenant_id, level=level, subject=subject, period=period)
            for level, subject, period in wanted
        ],
        ignore_conflicts=True,
    )
    matching = Q()
    for level, subject, period in wanted:
        matching |= Q(level=level, subject=subject, period=period)
    locked = BudgetCounter.objects.filter(matching, tenant_id=tenant_id).order_by("level", "subject", "period")
    return {(counter.level, counter.subject, counter.period): counter for counter in locked.select_for_update()}
