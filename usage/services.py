"""Metering model calls: reading usage off a response stream, recording it once, and budgets."""

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction

from conversations.models import Run
from tenants.models import PER_MILLION, Tenant, normalize_usage
from usage.models import COST_PLACES, UsageRecord, usd

Json = dict[str, Any]

# Anthropic streams announce each event's type on its `event:` line; only these carry usage, so
# the data of every other event (the many content deltas) is neither kept nor parsed.
USAGE_EVENTS = frozenset({"message_start", "message_delta", "message_stop", "error"})
# A rough, deliberately cheap size of a request in tokens (see budget_refusal).
BYTES_PER_TOKEN = 4


class SSEDecoder:
    """Incremental server-sent events decoder: bytes in, (event name, data) pairs out.

    Each byte is looked at about once: a partial line waits in `_tail`, and only the new chunk is
    searched for line ends, so feeding a stream one byte at a time stays linear. Lines may end in
    LF or CRLF (what Anthropic and Bedrock send); lone-CR line ends are not supported.
    """

    def __init__(self, wanted: frozenset[str] | None = None) -> None:
        self.wanted = wanted  # None: every event; otherwise data of other named events is skipped
        self._tail = bytearray()
        self._event = ""
        self._data: list[bytes] = []
        self._skipping = False

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        events: list[tuple[str, str]] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._tail += chunk[start:]
                return events
            if self._tail:
                self._tail += chunk[start:end]
                line = bytes(self._tail)
                self._tail.clear()
            else:
                line = chunk[start:end]
            self._line(line[:-1] if line.endswith(b"\r") else line, events)
            start = end + 1

    def close(self) -> list[tuple[str, str]]:
        """Events still pending when the stream ends without its final blank line."""
        events: list[tuple[str, str]] = []
        if self._tail:
            line = bytes(self._tail)
            self._tail.clear()
            self._line(line.removesuffix(b"\r"), events)
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[tuple[str, str]]) -> None:
        if not line:
            if self._data and not self._skipping:
                events.append((self._event or "message", b"\n".join(self._data).decode("utf-8", "replace")))
            self._event, self._data, self._skipping = "", [], False
            return
        if line.startswith(b":"):
            return  # a comment (keep-alive)
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"event":
            self._event = value.decode("utf-8", "replace")
            self._skipping = self.wanted is not None and self._event not in self.wanted
        elif name == b"data" and not self._skipping:
            self._data.append(value)


def merge_usage(into: Json, usage: Json) -> None:
    """Merge one event's usage into the call's: later figures are cumulative, so they replace earlier ones.

    A null never replaces a figure (message_delta may send `"input_tokens": null`), and the
    `cache_creation` split is merged key by key.
    """
    for key, value in usage.items():
        if value is None:
            continue
        if isinstance(value, dict):
            nested = into.get(key)
            if not isinstance(nested, dict):
                nested = into[key] = {}
            merge_usage(nested, value)
        else:
            into[key] = value


class UsageTap:
    """Reads the message id and usage of one model call off its raw response bytes, as they stream by.

    Feed it every chunk of the response body (`feed`), and call `close()` at the end. It understands
    an Anthropic SSE stream (`message_start` carries the id, model and input/cache usage,
    `message_delta` the final output_tokens and maybe again the others) and a non-streaming JSON
    message. Other upstreams with another framing (Bedrock's event stream) decode their frames and
    hand each Anthropic event dict to `observe_event`.
    """

    def __init__(self) -> None:
        self.message_id: str | None = None
        self.model: str | None = None
        self.usage: Json = {}
        self.complete = False  # message_stop seen, or a whole JSON message read
        self.error: Json | None = None  # an `error` event or error body, if the upstream sent one
        self._mode: str | None = None  # "sse" or "json", decided by the first non-blank byte
        self._sse = SSEDecoder(USAGE_EVENTS)
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._mode is None:
            stripped = chunk.lstrip()
            if not stripped:
                return
            self._mode = "json" if stripped.startswith(b"{") else "sse"
            chunk = stripped
        if self._mode == "json":
            # A non-streaming answer is one bounded JSON document: keep it and read it at the end.
            self._body += chunk
            return
        for _event, data in self._sse.feed(chunk):
            self._observe_data(data)

    def close(self) -> None:
        """The response has ended: read what was still buffered."""
        if self._mode == "json":
            body, self._body = bytes(self._body), bytearray()
            try:
                document = json.loads(body)
            except ValueError:
                return
            if isinstance(document, dict):
                self.observe_message(document)
        elif self._mode == "sse":
            for _event, data in self._sse.close():
                self._observe_data(data)

    @property
    def has_usage(self) -> bool:
        """True once the call has an id and usage figures, i.e. something to record."""
        return bool(self.message_id) and bool(self.usage)

    def observe_event(self, event: Json) -> None:
        """Take what one Anthropic streaming event says about the call (any other event is ignored)."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self._observe_header(message)
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):
                merge_usage(self.usage, usage)
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            error = event.get("error")
            self.error = error if isinstance(error, dict) else {"message": str(error)}

    def observe_message(self, message: Json) -> None:
        """Take a whole (non-streaming) Messages API answer, or its error body."""
        if message.get("type") == "error":
            self.observe_event(message)
            return
        self._observe_header(message)
        self.complete = message.get("type") == "message"

    def _observe_header(self, message: Json) -> None:
        if isinstance(message.get("id"), str):
            self.message_id = message["id"]
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        usage = message.get("usage")
        if isinstance(usage, dict):
            merge_usage(self.usage, usage)

    def _observe_data(self, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return  # not ours to judge: the bytes go to the client unchanged either way
        if isinstance(event, dict):
            self.observe_event(event)


def record_usage(run_id: UUID | str, message_id: str, usage: Json) -> UsageRecord | None:
    """Store one model call of the run, priced with the run's model; None if that call is already recorded.

    `usage` is the call's Anthropic usage dict (as UsageTap.usage gives it). Idempotent on
    (run, message_id), also against a concurrent call for the same message.
    """
    if not message_id:
        raise ValueError("A model call without a message id cannot be recorded once and only once.")
    run = Run.objects.select_related("conversation", "model").get(pk=run_id)
    cost = run.model.cost(usage).quantize(COST_PLACES)
    record = UsageRecord(
        tenant_id=run.conversation.tenant_id,
        conversation_id=run.conversation_id,
        run=run,
        user_id=run.user_id,
        model=run.model,
        message_id=message_id,
        cost_usd=cost,
        **normalize_usage(usage),
    )
    try:
        # A savepoint, so that a caller's transaction survives the duplicate.
        with transaction.atomic():
            record.save(force_insert=True)
    except IntegrityError:
        if UsageRecord.objects.filter(run_id=run.pk, message_id=message_id).exists():
            return None
        raise
    return record


def run_totals(run_id: UUID | str) -> dict[str, Any]:
    """The run's recorded usage: the five token kinds summed, `model_calls`, and `cost_usd` as a string."""
    return UsageRecord.objects.filter(run_id=run_id).totals()


def effective_budget(
    tenant: Tenant, override_usd: Decimal | None = None, override_calls: int | None = None
) -> tuple[Decimal | None, int | None]:
    """A new run's (budget_usd, budget_calls): the tenant's default, lowered by a per-request override.

    None means unlimited. An override can tighten the operator's limit but never loosen it (a
    tenant's own key must not raise what the operator set); each of the two is decided on its own.
    """
    return (_lower(tenant.run_budget_usd, override_usd), _lower(tenant.run_budget_calls, override_calls))


def _lower(default: Any, override: Any) -> Any:
    if override is None:
        return default
    return override if default is None else min(default, override)


def estimated_input_cost(run: Run, request_body: bytes) -> Decimal:
    """A cheap estimate of a request's input cost: body bytes / 4 as tokens, at the model's input price."""
    return Decimal(len(request_body) // BYTES_PER_TOKEN) * run.model.input_price / PER_MILLION


def budget_refusal(run: Run, request_body: bytes) -> str | None:
    """None when the run may make its next model call; otherwise why not, in words for the model and user.

    Refuses when `run.budget_calls` calls are already recorded, or when the recorded cost plus an
    estimate of this call's input cost would pass `run.budget_usd`. The estimate is deliberately
    rough and cheap: the request body's length in bytes / 4 as input tokens, at the model's input
    price, ignoring caching and output. Calls in flight at the same time are not yet recorded, so
    parallel calls (subagents) can overshoot a budget by what they spend.
    """
    if run.budget_calls is None and run.budget_usd is None:
        return None
    spent = UsageRecord.objects.filter(run_id=run.pk).totals()
    if run.budget_calls is not None and spent["model_calls"] >= run.budget_calls:
        return (
            f"This run has reached its budget of {run.budget_calls} model call(s) "
            f"({spent['model_calls']} made); start a new run to continue."
        )
    if run.budget_usd is not None:
        cost = Decimal(spent["cost_usd"])
        estimate = estimated_input_cost(run, request_body)
        if cost + estimate > run.budget_usd:
            return (
                f"This run's budget of ${run.budget_usd} USD would be exceeded: ${usd(cost)} spent so far, "
                f"and the next model call's input alone is estimated at ${usd(estimate)}."
            )
    return None
