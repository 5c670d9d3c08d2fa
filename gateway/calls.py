"""What the gateway does with every model call of a run, whatever the upstream: budget checks,
refusals, and relaying the answer while metering it once."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from conversations.models import Run
from conversations.reconnect import call_database
from gateway.metering import UsageTap
from tenants.models import LanguageModel
from usage import budgets
from usage.models import UsageRecord
from usage.services import record_usage

logger = logging.getLogger(__name__)

MESSAGES_PATH = "/v1/messages"
# Where a call's budget reservation waits (on its request) for the call's record, or its release.
RESERVATION = web.RequestKey("budget_reservation", int)
# The catalog model a call named, which its record is priced at.
CALL_MODEL = web.RequestKey("call_model", LanguageModel)
# How much of a model id a call names goes into a refusal and the log: the sandbox writes it.
SHOWN_MODEL_ID = 200

Refusal = Callable[[str, str, Mapping[str, str]], None]


def error_response(status: int, kind: str, message: str) -> web.Response:
    """An error in the Anthropic API's shape, which the CLI understands whatever the upstream."""
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


@dataclass(frozen=True)
class SideCall:
    """A Messages call of the platform's own (not the CLI's), as it is sent to the run's gateway: the path
    (quoted as sent), headers and body that the run's upstream expects from its CLI."""

    path: str
    headers: Mapping[str, str]
    body: bytes


def models_by_id(models: Iterable[LanguageModel]) -> dict[str, LanguageModel]:
    """Catalog models by the id a call names them by (`provider_model_id`): the shape `RunCalls` takes."""
    return {model.provider_model_id: model for model in models}


class ModelNotGiven(Exception):
    """A call names a model the run was not given; the message says which it may call."""

    def __init__(self, model_id: str, given: Iterable[str]) -> None:
        self.model_id = model_id[:SHOWN_MODEL_ID]
        self.message = f"This run may not call model {self.model_id}; it may call {', '.join(sorted(given))}."
        super().__init__(self.message)


class RunCalls:
    """The model calls of one run, as its upstream serves them.

    `models` are the catalog models the run may call (its fallback, its subagents' models, a small one
    for side calls), by the id calls name them by (`models_by_id`); the run's own model always is one,
    and by default the only one. Only those of the run's model's provider are given, and all are loaded
    before the run's first call: a call's model is looked up here, never in the database.

    `on_refusal(reason, message, details)` hears of a refusal the run cannot recover from (so it
    ends now instead of the CLI retrying for minutes); `on_usage(record)` hears of each call as it is
    recorded, before the CLI has the end of its answer. Calls not `on_run` (the platform's own, for the
    conversation: its title) are not capped or counted by the run's own budget (`usage.budgets.reserve`).
    """

    def __init__(
        self,
        run: Run,
        *,
        models: Mapping[str, LanguageModel] | None = None,
        on_refusal: Refusal | None = None,
        on_usage: Callable[[UsageRecord], None] | None = None,
        on_run: bool = True,
    ) -> None:
        self.run = run
        self.on_run = on_run
        self.model: LanguageModel = run.model
        given = dict(models or {})
        # The CLI speaks to one upstream, its model's: a model of another provider cannot be served (a profile's
        # fallback on Bedrock, say, for a conversation on an Anthropic model). Its calls are refused like those
        # of any model not given, rather than failing every run of the conversation.
        if elsewhere := sorted(model_id for model_id, model in given.items() if model.provider != self.model.provider):
            logger.warning(
                "Run %s cannot call %s: not served by %s, the provider of its model %s",
                run.pk,
                ", ".join(elsewhere),
                self.model.get_provider_display(),
                self.model.pk,
            )
        # The run's own model wins its id, should another catalog model share it.
        self.models: dict[str, LanguageModel] = {
            **{model_id: model for model_id, model in given.items() if model_id not in elsewhere},
            self.model.provider_model_id: self.model,
        }
        self.on_refusal = on_refusal
        self.on_usage = on_usage
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = 0
        self._settled = asyncio.Event()
        self._settled.set()

    def client_session(self) -> aiohttp.ClientSession:
        """The run's HTTP client for its upstream, opened on first use."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def settled(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the answers still streaming to end; False if some still are."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def model_named(self, model_id: object) -> LanguageModel:
        """The catalog model of a call that names `model_id`; ModelNotGiven if the run was not given it.

        A call that names no model is priced as the run's own: Anthropic's API refuses it (a 400,
        which is not metered); only the offline model answers it.
        """
        if not isinstance(model_id, str) or not model_id:
            return self.model
        try:
            return self.models[model_id]
        except KeyError:
            raise ModelNotGiven(model_id, self.models) from None

    async def reserve(
        self, request: web.BaseRequest, body: bytes, model_id: str | None = None, *, model_refusal_status: int = 403
    ) -> web.Response | None:
        """Admit a Messages call: find the catalog model it names (`model_id`, from a Bedrock path, else its body's
        `model`) and hold the call's worst-case cost at that model's prices on the run's budgets (usage.budgets).

        The refusal of a call past a budget, or of a call naming a model the run was not given (with
        `model_refusal_status`: the status at which the upstream's CLI gives up at once).
        """
        try:
            model, reservation = await call_database(
                f"Reserving a call of run {self.run.pk}", self._reserve, body, model_id
            )
        except ModelNotGiven as exc:
            # Not the run's end: a side call or a subagent's may name a model the run was not given, and the
            # CLI carries on without it (a refused subagent's Task call is a tool error its model reads);
            # a main call's refusal ends the CLI's turn with this message, which the run then reports.
            logger.info("Run %s: a call naming model %r was refused: not given", self.run.pk, exc.model_id)
            return error_response(model_refusal_status, "permission_error", exc.message)
        except budgets.BudgetExceeded as exc:
            # The figures are for operators (the log, the budgets API); the run and the CLI get the end user's words.
            logger.info("Run %s: a model call was refused: %s", self.run.pk, exc.message)
            return self.refuse("budget_exceeded", exc.notice, exc.details)
        request[CALL_MODEL] = model
        if reservation is not None:
            request[RESERVATION] = reservation
        return None

    def _reserve(self, body: bytes, model_id: str | None) -> tuple[LanguageModel, int | None]:
        # The body is read once, here, for its model and its worst case: json.loads holds the GIL
        # some 7 ms per MB wherever it runs.
        parsed = None
        if model_id is None:
            parsed = budgets.read_request(body)
            # Python keeps the last of duplicate keys, as JavaScript's and Go's parsers do; one that
            # refuses them refuses the call.
            model_id = parsed.get("model")
        model = self.model_named(model_id)
        return model, budgets.reserve(self.run, body, model, parsed, on_run=self.on_run)

    async def release(self, request: web.BaseRequest) -> None:
        """Give back what the call held if it ended without a record (refused upstream, unreachable, no usage)."""
        if (reservation := request.pop(RESERVATION, None)) is not None:
            tenant = self.run.conversation.tenant_id
            await call_database(f"Releasing a call of run {self.run.pk}", budgets.release, reservation, tenant)

    def refuse(self, reason: str, message: str, details: Mapping[str, str] | None = None) -> web.Response:
        """Refuse a call and end the run: `reason` is the run's error reason, `message` what the user reads."""
        if self.on_refusal:
            self.on_refusal(reason, message, details or {})
        # 403: the CLI retries a 400 or 429 (and, in Bedrock mode, even this) while the run stops.
        return error_response(403, "permission_error", message)

    async def read_messages_call(self, request: web.BaseRequest) -> bytes | web.Response:
        """The body of an Anthropic API call, or the refusal to answer it (wrong method, over budget)."""
        if request.method != "POST":
            return error_response(405, "invalid_request_error", "Only POST is supported.")
        body = await request.read()
        if request.path == MESSAGES_PATH and (refusal := await self.reserve(request, body)):
            return refusal
        return body

    async def relay(
        self,
        request: web.BaseRequest,
        status: int,
        headers: dict[str, str],
        chunks: AsyncIterator[bytes],
        tap: UsageTap | None,
    ) -> web.StreamResponse:
        """Stream an answer to the CLI chunk by chunk; with a `tap`, the call is metered from the answer itself.

        The call is recorded as soon as its usage is final (`message_delta`), before the chunk that
        says so reaches the CLI: so the next call's budget check sees it, and the run's `usage`
        event can be the record itself. An answer cut off earlier is recorded with what it had.
        """
        self._in_flight += 1
        self._settled.clear()
        try:
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            recorded = False
            try:
                async for chunk in chunks:
                    if tap is not None:
                        tap.feed(chunk)
                        if tap.settled and not recorded:
                            recorded = True
                            await self._record(request, tap)
                    await response.write(chunk)
            except ConnectionResetError:
                pass  # the CLI hung up (an interrupt); what was streamed so far is still metered
            except aiohttp.ClientError as exc:
                # The upstream broke off mid-answer: the CLI sees a cut stream and retries the call.
                logger.warning("Upstream stream of run %s broke off: %s", self.run.pk, type(exc).__name__)
            finally:
                if tap is not None:
                    tap.close()
                    if not recorded:
                        await self._record(request, tap)
            try:
                await response.write_eof()
            except ConnectionResetError:
                pass
            return response
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._settled.set()

    async def _record(self, request: web.BaseRequest, tap: UsageTap) -> None:
        """Record the call, in place of its reservation; without usage, the reservation stays for `release`."""
        if not tap.has_usage:
            return
        assert tap.message_id is not None  # has_usage says so
        record = await call_database(
            f"Recording a model call of run {self.run.pk}",
            record_usage,
            self.run,
            tap.message_id,
            tap.usage,
            request.pop(RESERVATION, None),
            request.get(CALL_MODEL),
            on_run=self.on_run,
        )
        if record is not None and self.on_usage:
            self.on_usage(record)


def messages_tap(request: web.BaseRequest, status: int) -> UsageTap | None:
    """A meter for an Anthropic API answer: only a successful Messages call is billed."""
    return UsageTap() if request.path == MESSAGES_PATH and status == 200 else None
