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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Q
from django.utils import timezone

from conversations.models import Conversation, Run
from tenants.models import PER_MILLION, LanguageModel, Tenant
from usage import counters
from usage.counters import Cap, Key, own_or_default
from usage.models import COST_PLACES, BudgetCounter, BudgetLevel, BudgetReservation, UserBudget, usd

Json = dict[str, Any]

# Request bytes per input token in the worst case: tokenizers average 3.5 to 4 bytes of English text
# per token; code, JSON and non-Latin scripts run denser.
BYTES_PER_INPUT_TOKEN = 3

# An image costs about width * height / 750 tokens, and the API scales a large one down before it
# counts (to ~1,600 tokens; more for models that read images at high resolution): its base64 bytes
# would count a photo as hundreds of thousands. Bounded here well above every model's largest.
IMAGE_TOKENS = 10_000

LEVEL_NAMES = {
    BudgetLevel.TENANT_MONTH: "The organisation's monthly budget",
    BudgetLevel.USER_DAY: "This user's daily budget",
    BudgetLevel.USER_MONTH: "This user's monthly budget",
    BudgetLevel.CONVERSATION: "This conversation's budget",
    BudgetLevel.RUN: "This run's budget",
}


# What the end user reads when a budget stops their run: whose budget, in their terms ({renews}: when it does).
NOTICES = {
    BudgetLevel.TENANT_MONTH: "This service has reached its monthly budget; it renews on {renews}.",
    BudgetLevel.USER_DAY: "You have reached your daily budget; it renews on {renews}.",
    BudgetLevel.USER_MONTH: "You have reached your monthly budget; it renews on {renews}.",
    BudgetLevel.CONVERSATION: "This conversation has reached its budget.",
    BudgetLevel.RUN: "This message has reached its budget.",
}


class BudgetExceeded(Exception):
    """A call that would pass a budget: `message` gives the figures (for operators and logs), `notice` says
    it to the end user (whose budget, and when it renews)."""

    def __init__(self, cap: Cap, message: str, time_zone: str) -> None:
        super().__init__(message)
        self.level = cap.level
        self.period = cap.period
        self.message = message
        self.notice = budget_notice(cap.level, cap.period, time_zone)

    @property
    def details(self) -> dict[str, str]:
        return {"level": self.level, "period": self.period}


def budget_notice(level: str, period: str, time_zone: str) -> str:
    """The end user's words for a budget at `level` used up in `period`, e.g. "…; it renews on 1 January."."""
    renews = period_bounds(period, time_zone)[1]
    return NOTICES[BudgetLevel(level)].format(renews=f"{renews.day} {renews:%B}" if renews else "")


def periods(moment: datetime, time_zone: str) -> tuple[str, str]:
    """The day ("2026-11-28") and month ("2026-11") of `moment` where the tenant lives."""
    local = moment.astimezone(ZoneInfo(time_zone))
    return local.strftime("%Y-%m-%d"), local.strftime("%Y-%m")


def spending_keys(run: Run, moment: datetime, *, on_run: bool = True) -> list[Key]:
    """The counters a call of `run` at `moment` spends on: the tenant's and user's always, the others when capped
    (the run's own only for a call `on_run`: see `reserve`)."""
    conversation = run.conversation
    day, month = periods(moment, conversation.tenant.time_zone)
    keys: list[Key] = [(BudgetLevel.TENANT_MONTH, "", month)]
    if run.user_id:
        keys += [(BudgetLevel.USER_DAY, run.user_id, day), (BudgetLevel.USER_MONTH, run.user_id, month)]
    if conversation.budget_usd is not None or conversation.budget_calls is not None:
        keys.append((BudgetLevel.CONVERSATION, str(conversation.pk), ""))
    if on_run and (run.budget_usd is not None or run.budget_calls is not None):
        keys.append((BudgetLevel.RUN, str(run.pk), ""))
    return keys


@dataclass(frozen=True)
class CallTerms:
    """What caps a run's next call, and the prices its worst case is reckoned at (USD per million tokens)."""

    caps: list[Cap]
    input_price: Decimal
    output_price: Decimal
    time_zone: str = "UTC"  # the tenant's: where its days and months begin


def call_terms(run: Run, moment: datetime, model: LanguageModel | None = None, *, on_run: bool = True) -> CallTerms:
    """The budgets that cap the run's next call of `model` (the run's own by default), and that model's prices,
    read afresh so that an operator's change applies to it. A call not `on_run` is not capped by the run's own.

    A conversation's and a run's budgets are fixed when they are made: those come from `run`.
    """
    model = model or run.model
    terms = counters.read_terms(run.conversation.tenant_id, run.user_id, model.pk, moment)
    day, month = periods(moment, terms.time_zone)
    found = [
        Cap((BudgetLevel.TENANT_MONTH, "", month), terms.month_usd, terms.month_calls),
        Cap(
            (BudgetLevel.CONVERSATION, str(run.conversation_id), ""),
            run.conversation.budget_usd,
            run.conversation.budget_calls,
        ),
    ]
    if on_run:
        found.append(Cap((BudgetLevel.RUN, str(run.pk), ""), run.budget_usd, run.budget_calls))
    if run.user_id:
        found += [
            Cap((BudgetLevel.USER_DAY, run.user_id, day), terms.user_day_usd, terms.user_day_calls),
            Cap((BudgetLevel.USER_MONTH, run.user_id, month), terms.user_month_usd, terms.user_month_calls),
        ]
    input_prices = terms.input_prices or (model.input_price, model.cache_write_5m_price, model.cache_write_1h_price)
    return CallTerms(
        caps=sorted((cap for cap in found if cap.usd is not None or cap.calls is not None), key=lambda cap: cap.key),
        input_price=max(input_prices),
        output_price=model.output_price if terms.output_price is None else terms.output_price,
        time_zone=terms.time_zone,
    )


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
            own_or_default(own.daily_usd, tenant.user_daily_budget_usd),
            own_or_default(own.daily_calls, tenant.user_daily_budget_calls),
        ),
        Cap(
            (BudgetLevel.USER_MONTH, user_id, month),
            own_or_default(own.monthly_usd, tenant.user_monthly_budget_usd),
            own_or_default(own.monthly_calls, tenant.user_monthly_budget_calls),
        ),
    ]


def worst_case_cost(terms: CallTerms, max_output_tokens: int, body: bytes, request: Json | None = None) -> Decimal:
    """The most a Messages call can cost: its input at the dearest input price, and all of its `max_tokens`.

    Input is priced as if every BYTES_PER_INPUT_TOKEN bytes of the request were a token written to
    the cache for an hour (the dearest way to send input), a base64 image's bytes at most
    IMAGE_TOKENS; output as the request's `max_tokens` (at most the model's `max_output_tokens`),
    the model's own limit when the request names none. `request` is `body` already read
    (`read_request`), when the caller has read it.
    """
    if request is None:
        request = read_request(body)
    images = list(_base64_images(request.get("messages")))
    text_bytes = len(body) - sum(images)
    input_tokens = math.ceil(text_bytes / BYTES_PER_INPUT_TOKEN) + sum(
        min(math.ceil(size / BYTES_PER_INPUT_TOKEN), IMAGE_TOKENS) for size in images
    )
    asked = request.get("max_tokens")
    asked = asked if isinstance(asked, int) and asked > 0 else max_output_tokens
    output_tokens = min(asked, max_output_tokens)
    cost = (input_tokens * terms.input_price + output_tokens * terms.output_price) / PER_MILLION
    return cost.quantize(COST_PLACES)


def _base64_images(messages: object) -> Iterator[int]:
    """The sizes of the base64 images among the messages' content blocks, and inside their tool results."""
    for message in messages if isinstance(messages, list) else ():
        blocks = message.get("content") if isinstance(message, dict) else None
        for block in blocks if isinstance(blocks, list) else ():
            inner = block.get("content") if isinstance(block, dict) else None
            for part in [block, *(inner if isinstance(inner, list) else ())]:
                if not isinstance(part, dict) or part.get("type") != "image":
                    continue
                source = part.get("source")
                if isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str):
                    yield len(source["data"])


def read_request(body: bytes) -> Json:
    """A Messages call's body as a JSON object; {} when it is none (the upstream refuses such a call)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past what Python parses
        return {}
    return request if isinstance(request, dict) else {}


def reserve(
    run: Run, body: bytes, model: LanguageModel | None = None, request: Json | None = None, *, on_run: bool = True
) -> int | None:
    """Hold the worst-case cost of the call `body` asks for, and one call, on every budget that caps it.

    A call not `on_run` is the platform's own for the run's conversation (its title): the tenant's, the end
    user's and the conversation's budgets cap it, the run's does not (a run's budget is what its agent may do).
    The call is priced at `model`, the catalog model it names (the run's own by default); `request`
    is `body` already read (`read_request`), when the caller has read it. The reservation's id, or
    None when no budget caps the call. Raises BudgetExceeded, holding nothing, when one would be passed.
    """
    model = model or run.model
    terms = call_terms(run, timezone.now(), model, on_run=on_run)
    if not terms.caps:
        return None
    worst_case = worst_case_cost(terms, model.max_output_tokens, body, request)
    held, reservation = counters.hold(run.conversation.tenant_id, run.pk, terms.caps, worst_case)
    if reservation is None:
        refused = next(cap for cap in terms.caps if not cap.fits(held[cap.key], worst_case))
        raise refusal(refused, held[refused.key], worst_case, terms.time_zone)
    return reservation


def refusal(cap: Cap, counter: BudgetCounter, worst_case: Decimal, time_zone: str) -> BudgetExceeded:
    """Why a call of `worst_case` does not fit `cap`, whose counter stands as given (periods in `time_zone`)."""
    name, period = LEVEL_NAMES[BudgetLevel(cap.level)], f" for {cap.period}" if cap.period else ""
    if cap.calls is not None and counter.calls + counter.reserved_calls + 1 > cap.calls:
        in_flight = f", {counter.reserved_calls} in progress" if counter.reserved_calls else ""
        return BudgetExceeded(
            cap, f"{name}{period} of {cap.calls} model call(s) is used up ({counter.calls} made{in_flight}).", time_zone
        )
    assert cap.usd is not None  # it does not fit, and not by its calls
    held = f" and ${usd(counter.reserved_usd)} held by calls in progress" if counter.reserved_calls else ""
    return BudgetExceeded(
        cap,
        f"{name}{period} of ${cap.usd.normalize():f} USD would be exceeded: ${usd(counter.spent_usd)} spent"
        f"{held}, and the next model call may cost up to ${usd(worst_case)}.",
        time_zone,
    )


def settle(run: Run, reservation_id: int | None, moment: datetime, cost: Decimal, *, on_run: bool = True) -> None:
    """Count a recorded call on its budgets, in place of its reservation (inside the record's transaction)."""
    counters.settle(run.conversation.tenant_id, spending_keys(run, moment, on_run=on_run), cost, reservation_id)


def release(reservation_id: int, tenant_id: str) -> None:
    """Give back a reservation whose call ended without a record (refused upstream, broken off, duplicate)."""
    counters.give_back(reservation_id, tenant_id)


def release_abandoned() -> int:
    """Release what calls of dead workers still hold: the reservations of runs no longer running.

    A run whose worker died is failed by the reaper (runs.dispatch), so its calls in flight are
    gone; a run that ended while a call was being cut off may leave one too. Every process's
    reaper calls this every few seconds, so each statement reads one table: when nothing is held
    that is one read of an empty table, and no statement holds one table while it waits for another.
    """
    held = dict(BudgetReservation.objects.values_list("pk", "run_id")[:1000])
    if not held:
        return 0
    runs = dict(
        Run.objects.filter(pk__in=set(held.values()))
        .exclude(status=Run.Status.RUNNING)
        .values_list("pk", "conversation_id")
    )
    tenants = dict(Conversation.objects.filter(pk__in=set(runs.values())).values_list("pk", "tenant_id"))
    released = 0
    for reservation_id, run_id in held.items():
        if run_id in runs:
            release(reservation_id, tenants[runs[run_id]])
            released += 1
    return released


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
