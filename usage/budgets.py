"""Budgets a model call must fit: the tenant's month, the end user's day and month, the conversation, the run.

Before a call goes upstream the gateway reserves its worst-case cost (`worst_case_cost`) on every
budget that caps it (`reserve`): admitted only if what each has spent, plus what calls in flight
have reserved, plus this call's worst case, fits. The call's usage record replaces its reservation
with the real cost in the same transaction (`settle`, from `record_usage`); a call that ends without
a record gives it back (`release`), and so does the reaper for a worker that died mid-call
(`release_abandoned`). Parallel calls therefore never pass a cap together by more than the reserved
worst cases allow.

Each budget's figures live in one `BudgetCounter` row per period. Every transaction locks the rows
it changes in the order of their keys, so that parallel calls queue instead of deadlocking.
"""

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from conversations.models import Conversation, Run
from tenants.models import PER_MILLION, LanguageModel, Tenant
from usage.models import COST_PLACES, BudgetCounter, BudgetLevel, BudgetReservation, UserBudget, usd

Key = tuple[str, str, str]  # level, subject, period
Json = dict[str, Any]

# Request bytes per input token in the worst case: tokenizers average 3.5 to 4 bytes of English text
# per token; code, JSON and non-Latin scripts run denser.
BYTES_PER_INPUT_TOKEN = 3

LEVEL_NAMES = {
    BudgetLevel.TENANT_MONTH: "The organisation's monthly budget",
    BudgetLevel.USER_DAY: "This user's daily budget",
    BudgetLevel.USER_MONTH: "This user's monthly budget",
    BudgetLevel.CONVERSATION: "This conversation's budget",
    BudgetLevel.RUN: "This run's budget",
}


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


class BudgetExceeded(Exception):
    """A call that would pass a budget; `message` is for the user and the model alike."""

    def __init__(self, cap: Cap, message: str) -> None:
        super().__init__(message)
        self.level = cap.level
        self.period = cap.period
        self.message = message

    @property
    def details(self) -> dict[str, str]:
        return {"level": self.level, "period": self.period}


def periods(moment: datetime, time_zone: str) -> tuple[str, str]:
    """The day ("2026-11-28") and month ("2026-11") of `moment` where the tenant lives."""
    local = moment.astimezone(ZoneInfo(time_zone))
    return local.strftime("%Y-%m-%d"), local.strftime("%Y-%m")


def spending_keys(run: Run, moment: datetime) -> list[Key]:
    """The counters a call of `run` at `moment` spends on: the tenant's and user's always, the others when capped."""
    conversation = run.conversation
    day, month = periods(moment, conversation.tenant.time_zone)
    keys: list[Key] = [(BudgetLevel.TENANT_MONTH, "", month)]
    if run.user_id:
        keys += [(BudgetLevel.USER_DAY, run.user_id, day), (BudgetLevel.USER_MONTH, run.user_id, month)]
    if conversation.budget_usd is not None or conversation.budget_calls is not None:
        keys.append((BudgetLevel.CONVERSATION, str(conversation.pk), ""))
    if run.budget_usd is not None or run.budget_calls is not None:
        keys.append((BudgetLevel.RUN, str(run.pk), ""))
    return keys


def caps(run: Run, moment: datetime) -> list[Cap]:
    """The budgets that cap the run's next call, read afresh: an operator's change applies to the next call."""
    tenant = Tenant.objects.get(pk=run.conversation.tenant_id)
    day, month = periods(moment, tenant.time_zone)
    found = [
        Cap((BudgetLevel.TENANT_MONTH, "", month), tenant.monthly_budget_usd, tenant.monthly_budget_calls),
        Cap(
            (BudgetLevel.CONVERSATION, str(run.conversation_id), ""),
            run.conversation.budget_usd,
            run.conversation.budget_calls,
        ),
        Cap((BudgetLevel.RUN, str(run.pk), ""), run.budget_usd, run.budget_calls),
    ]
    if run.user_id:
        found += user_caps(tenant, own_budget(tenant, run.user_id), day, month)
    return sorted((cap for cap in found if cap.usd is not None or cap.calls is not None), key=lambda cap: cap.key)


def own_budget(tenant: Tenant, user_id: str) -> UserBudget:
    """The end user's own budgets (an unsaved, empty one when it has none)."""
    return UserBudget.objects.filter(tenant=tenant, user_id=user_id).first() or UserBudget(
        tenant=tenant, user_id=user_id
    )


def user_caps(tenant: Tenant, own: UserBudget, day: str, month: str) -> list[Cap]:
    """The end user's day and month: its own budgets where it has them, else the tenant's defaults."""
    user_id = own.user_id
    return [
        Cap(
            (BudgetLevel.USER_DAY, user_id, day),
            _own_or_default(own.daily_usd, tenant.user_daily_budget_usd),
            _own_or_default(own.daily_calls, tenant.user_daily_budget_calls),
        ),
        Cap(
            (BudgetLevel.USER_MONTH, user_id, month),
            _own_or_default(own.monthly_usd, tenant.user_monthly_budget_usd),
            _own_or_default(own.monthly_calls, tenant.user_monthly_budget_calls),
        ),
    ]


def _own_or_default(own: Any, default: Any) -> Any:
    return default if own is None else own


def worst_case_cost(model: LanguageModel, body: bytes) -> Decimal:
    """The most a Messages call can cost: its input at the dearest input price, and all of its `max_tokens`.

    Input is priced as if every BYTES_PER_INPUT_TOKEN bytes of the request were a token written to
    the cache for an hour (the dearest way to send input); output as the request's `max_tokens`
    (at most the model's), the model's own limit when the request names none.
    """
    input_price = max(model.input_price, model.cache_write_5m_price, model.cache_write_1h_price)
    input_tokens = math.ceil(len(body) / BYTES_PER_INPUT_TOKEN)
    output_tokens = min(_max_tokens(body) or model.max_output_tokens, model.max_output_tokens)
    cost = (input_tokens * input_price + output_tokens * model.output_price) / PER_MILLION
    return cost.quantize(COST_PLACES)


def _max_tokens(body: bytes) -> int | None:
    try:
        value = json.loads(body).get("max_tokens")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def reserve(run: Run, body: bytes) -> BudgetReservation | None:
    """Hold the worst-case cost of the call `body` asks for, and one call, on every budget that caps it.

    None when no budget caps it. Raises BudgetExceeded, holding nothing, when one would be passed.
    """
    found = caps(run, timezone.now())
    if not found:
        return None
    worst_case = worst_case_cost(run.model, body)
    with transaction.atomic():
        counters = _locked(run.conversation.tenant_id, [cap.key for cap in found])
        for cap in found:
            _check(cap, counters[cap.key], worst_case)
        BudgetCounter.objects.filter(pk__in=[counter.pk for counter in counters.values()]).update(
            reserved_usd=F("reserved_usd") + worst_case, reserved_calls=F("reserved_calls") + 1
        )
        return BudgetReservation.objects.create(run=run, usd=worst_case, keys=[list(cap.key) for cap in found])


def _check(cap: Cap, counter: BudgetCounter, worst_case: Decimal) -> None:
    name, period = LEVEL_NAMES[BudgetLevel(cap.level)], f" for {cap.period}" if cap.period else ""
    in_flight = f", {counter.reserved_calls} in progress" if counter.reserved_calls else ""
    if cap.calls is not None and counter.calls + counter.reserved_calls + 1 > cap.calls:
        raise BudgetExceeded(
            cap, f"{name}{period} of {cap.calls} model call(s) is used up ({counter.calls} made{in_flight})."
        )
    if cap.usd is not None and counter.spent_usd + counter.reserved_usd + worst_case > cap.usd:
        held = f" and ${usd(counter.reserved_usd)} held by calls in progress" if counter.reserved_calls else ""
        raise BudgetExceeded(
            cap,
            f"{name}{period} of ${cap.usd.normalize():f} USD would be exceeded: ${usd(counter.spent_usd)} spent"
            f"{held}, and the next model call may cost up to ${usd(worst_case)}.",
        )


def settle(run: Run, reservation_id: int | None, moment: datetime, cost: Decimal) -> None:
    """Count a recorded call on its budgets, in place of its reservation (call inside the record's transaction)."""
    held = _take(reservation_id)
    spent = spending_keys(run, moment)
    counters = _locked(run.conversation.tenant_id, [*spent, *(held[1] if held else [])])
    BudgetCounter.objects.filter(pk__in=[counters[key].pk for key in spent]).update(
        spent_usd=F("spent_usd") + cost, calls=F("calls") + 1
    )
    if held:
        _give_back(held[0], [counters[key] for key in held[1]])


def release(reservation_id: int) -> None:
    """Give back a reservation whose call ended without a record (refused upstream, broken off, duplicate)."""
    with transaction.atomic():
        held = _take(reservation_id)
        if held is None:
            return
        amount, keys, run_id = held
        tenant_id = Run.objects.filter(pk=run_id).values_list("conversation__tenant_id", flat=True).first()
        _give_back(amount, _locked(tenant_id, keys).values())


def release_abandoned() -> int:
    """Release what calls of dead workers still hold: the reservations of runs no longer running.

    A run reaped from a dead worker is queued again or failed, and its new worker releases what
    the old one held when it claims the run (`release_run`), so neither waits for its calls.
    """
    abandoned = BudgetReservation.objects.exclude(run__status=Run.Status.RUNNING).values_list("pk", flat=True)
    released = 0
    for reservation_id in abandoned[:1000]:
        release(reservation_id)
        released += 1
    return released


def release_run(run_id: Any) -> None:
    """Release every reservation of a run: its calls in flight are gone (its worker died, or it ended)."""
    for reservation_id in BudgetReservation.objects.filter(run_id=run_id).values_list("pk", flat=True):
        release(reservation_id)


def _take(reservation_id: int | None) -> tuple[Decimal, list[Key], Any] | None:
    """Delete the reservation: its amount, keys and run, or None if it was already settled or released."""
    if reservation_id is None:
        return None
    held = BudgetReservation.objects.select_for_update().filter(pk=reservation_id).first()
    if held is None:
        return None
    held.delete()
    amount, keys, run_id = held.usd, held.keys, held.run_id
    return amount, [(level, subject, period) for level, subject, period in keys], run_id


def _give_back(amount: Decimal, counters: Iterable[BudgetCounter]) -> None:
    BudgetCounter.objects.filter(pk__in=[counter.pk for counter in counters]).update(
        reserved_usd=Greatest(F("reserved_usd") - amount, Decimal(0)),
        reserved_calls=Greatest(F("reserved_calls") - 1, 0),
    )


def _locked(tenant_id: Any, keys: Sequence[Key]) -> dict[Key, BudgetCounter]:
    """The tenant's counters of `keys`, created as needed and locked in key order (which avoids deadlocks)."""
    wanted = sorted(set(keys))
    BudgetCounter.objects.bulk_create(
        [
            BudgetCounter(tenant_id=tenant_id, level=level, subject=subject, period=period)
            for level, subject, period in wanted
        ],
        ignore_conflicts=True,
    )
    matching = BudgetCounter.objects.none()
    for level, subject, period in wanted:
        matching |= BudgetCounter.objects.filter(tenant_id=tenant_id, level=level, subject=subject, period=period)
    locked = matching.order_by("level", "subject", "period").select_for_update()
    return {(counter.level, counter.subject, counter.period): counter for counter in locked}


def period_bounds(period: str, time_zone: str) -> tuple[datetime | None, datetime | None]:
    """When a day ("2026-11-28") or month ("2026-11") begins and ends where the tenant lives; none for ""."""
    if not period:
        return None, None
    zone = ZoneInfo(time_zone)
    if len(period) == len("2026-11"):
        year, month = map(int, period.split("-"))
        start = datetime(year, month, 1, tzinfo=zone)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
    else:
        start = datetime.fromisoformat(period).replace(tzinfo=zone)
        end = datetime.combine(start.date() + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return start, end


def state(tenant: Tenant, cap: Cap) -> dict[str, Any]:
    """One budget as a client reads it: its limits, what is spent and held in its period, and what is left."""
    level, subject, period = cap.key
    counter = BudgetCounter.objects.filter(tenant=tenant, level=level, subject=subject, period=period).first()
    counter = counter or BudgetCounter(tenant=tenant, level=level, subject=subject, period=period)
    starts_at, ends_at = period_bounds(period, tenant.time_zone)
    used_usd = counter.spent_usd + counter.reserved_usd
    used_calls = counter.calls + counter.reserved_calls
    return {
        "level": level,
        "period": period or None,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "limit_usd": cap.usd,
        "limit_calls": cap.calls,
        "spent_usd": usd(counter.spent_usd),
        "calls": counter.calls,
        "reserved_usd": usd(counter.reserved_usd),
        "reserved_calls": counter.reserved_calls,
        "remaining_usd": None if cap.usd is None else usd(max(cap.usd - used_usd, Decimal(0))),
        "remaining_calls": None if cap.calls is None else max(cap.calls - used_calls, 0),
    }


def tenant_state(tenant: Tenant, moment: datetime) -> dict[str, Any]:
    """The tenant's month now, and the defaults its users, conversations and runs get."""
    _, month = periods(moment, tenant.time_zone)
    key = (BudgetLevel.TENANT_MONTH, "", month)
    return {
        "tenant": tenant.pk,
        "month": state(tenant, Cap(key, tenant.monthly_budget_usd, tenant.monthly_budget_calls)),
        "defaults": {
            "user_day": {"usd": tenant.user_daily_budget_usd, "calls": tenant.user_daily_budget_calls},
            "user_month": {"usd": tenant.user_monthly_budget_usd, "calls": tenant.user_monthly_budget_calls},
            "conversation": {"usd": tenant.conversation_budget_usd, "calls": tenant.conversation_budget_calls},
            "run": {"usd": tenant.run_budget_usd, "calls": tenant.run_budget_calls},
        },
    }


def user_state(tenant: Tenant, user_id: str, moment: datetime) -> dict[str, Any]:
    """An end user's day and month now, under its own budgets where it has them, else the tenant's defaults."""
    day, month = periods(moment, tenant.time_zone)
    own = own_budget(tenant, user_id)
    daily, monthly = user_caps(tenant, own, day, month)
    return {
        "tenant": tenant.pk,
        "user_id": user_id,
        "day": state(tenant, daily),
        "month": state(tenant, monthly),
        "own": {field: getattr(own, field) for field in USER_BUDGET_FIELDS},
    }


USER_BUDGET_FIELDS = ["daily_usd", "daily_calls", "monthly_usd", "monthly_calls"]


def near_caps(moment: datetime, tenant: Tenant | None = None, threshold: float = 0.8, limit: int = 20) -> list[Json]:
    """The budgets of the current periods that have used `threshold` or more of a limit, fullest first.

    For the operator's dashboard: tenants' months, end users' days and months, and conversations
    (spent plus held by calls in progress, against the USD or the call limit, whichever is fuller).
    """
    tenants = {t.pk: t for t in ([tenant] if tenant else Tenant.objects.all())}
    current = {pk: periods(moment, t.time_zone) for pk, t in tenants.items()}
    days = {day for day, _ in current.values()}
    months = {month for _, month in current.values()}
    candidates = BudgetCounter.objects.filter(tenant__in=list(tenants)).filter(
        Q(level=BudgetLevel.TENANT_MONTH, period__in=months)
        | Q(level=BudgetLevel.USER_DAY, period__in=days)
        | Q(level=BudgetLevel.USER_MONTH, period__in=months)
        | Q(level=BudgetLevel.CONVERSATION)
    )
    counters = [c for c in candidates if c.period in ("", *current[c.tenant_id])]
    own = {
        (budget.tenant_id, budget.user_id): budget
        for budget in UserBudget.objects.filter(
            tenant__in=list(tenants), user_id__in={c.subject for c in counters if c.level.startswith("user")}
        )
    }
    conversations = {
        str(pk): (budget_usd, budget_calls)
        for pk, budget_usd, budget_calls in Conversation.objects.filter(
            pk__in=[c.subject for c in counters if c.level == BudgetLevel.CONVERSATION]
        ).values_list("pk", "budget_usd", "budget_calls")
    }
    found = []
    for counter in counters:
        owner = tenants[counter.tenant_id]
        if counter.level == BudgetLevel.TENANT_MONTH:
            limit_usd, limit_calls = owner.monthly_budget_usd, owner.monthly_budget_calls
        elif counter.level == BudgetLevel.CONVERSATION:
            limit_usd, limit_calls = conversations.get(counter.subject, (None, None))
        else:
            user = own.get((owner.pk, counter.subject)) or UserBudget(tenant=owner, user_id=counter.subject)
            day, month = user_caps(owner, user, counter.period, counter.period)
            cap = day if counter.level == BudgetLevel.USER_DAY else month
            limit_usd, limit_calls = cap.usd, cap.calls
        share = _share(counter, limit_usd, limit_calls)
        if share is not None and share >= threshold:
            found.append(
                {
                    "tenant": owner.pk,
                    "level": counter.get_level_display(),
                    "subject": counter.subject,
                    "period": counter.period,
                    "spent_usd": counter.spent_usd + counter.reserved_usd,
                    "calls": counter.calls + counter.reserved_calls,
                    "limit_usd": limit_usd,
                    "limit_calls": limit_calls,
                    "share": min(share, 1.0),
                }
            )
    return sorted(found, key=lambda budget: -budget["share"])[:limit]


def _share(counter: BudgetCounter, limit_usd: Decimal | None, limit_calls: int | None) -> float | None:
    """How full the budget is (1 is full), by whichever of its limits is fuller; None when it has none."""
    shares = []
    if limit_usd is not None:
        used = counter.spent_usd + counter.reserved_usd
        shares.append(float(used / limit_usd) if limit_usd else float(used > 0 or 1))
    if limit_calls is not None:
        used_calls = counter.calls + counter.reserved_calls
        shares.append(used_calls / limit_calls if limit_calls else 1.0)
    return max(shares) if shares else None
