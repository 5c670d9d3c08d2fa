"""A run of a `chat` agent: one streamed Messages API call through the run's gateway; no CLI, no sandbox.

`runs.executor.RunExecution` drives it as it drives the CLI, with the same `run.started`, events, usage,
interrupts, limits and terminal event. This module makes the call as the agent version says (its
instructions as the system prompt, its thinking budget and effort; the run's model, up to the catalog's
output limit), with the conversation's earlier turns as history, and turns the answer into events as it
streams. The call goes to the run's own gateway over loopback HTTP with the run's token, exactly as the
CLI's calls do, so it is budgeted before it is made and metered from the answer itself.

History (`chat_history`): each earlier run of the conversation that completed, or was interrupted after
some text, is one turn: what the run received (`Run.input`) and the text it answered (a completed run's
`result`; an interrupted run's text blocks). Failed runs and runs without text are left out, so the
roles alternate. The newest HISTORY_TURNS turns are sent, fewer when together they would pass
HISTORY_CHARS characters (the oldest go first). Earlier turns' thinking and tool calls are not sent: an
agent-kind turn counts by its text alone.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from agents.models import AgentVersion
from conversations.events import EventType
from conversations.models import Event, Run
from gateway.server import ModelGateway
from gateway.upstreams import EventDecoder
from runs.translate import EventTranslator, message_event

logger = logging.getLogger(__name__)

# Fifty turns of a chat, or some 50,000 tokens of it: far from a 200k-token context window, and the
# call's input (which every turn pays for again, cache aside) stays bounded however long a chat runs.
HISTORY_TURNS = 50
HISTORY_CHARS = 200_000
# A call refused before it answered (overloaded, rate-limited, a 5xx) is tried again, as the CLI does,
# but fewer times: a chat's user is waiting for the first word.
MODEL_RETRIES = 2
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
RETRY_DELAY_SECONDS = 0.5
MAX_RETRY_DELAY_SECONDS = 8.0
# The Messages API takes `output_config.effort` from Claude Opus 4.5 on, there behind this beta.
EFFORT_BETA = "effort-2025-11-24"
MIN_THINKING_TOKENS = 1024  # the API's least thinking budget

Emit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class ChatAnswer:
    text: str
    stop_reason: str | None
    message_id: str | None


class ModelFailed(Exception):
    """The call was refused or its answer broke off; `detail` is for operators, never for the end user.

    Only a call refused before it answered is tried again (`retryable`): once an answer streams, the user
    has seen part of it."""

    def __init__(
        self, status: int | None, detail: str, retry_after: float | None = None, *, answering: bool = False
    ) -> None:
        super().__init__(f"{status or 'no status'}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.retryable = not answering and (status is None or status in RETRY_STATUSES)

    @property
    def refuses_effort(self) -> bool:
        """A 400 about the effort setting: the model does not take it (the CLI then calls again without it)."""
        detail = self.detail.lower()
        return self.status == 400 and ("effort" in detail or "output_config" in detail)


def chat_history(run: Run) -> list[dict[str, Any]]:
    """The Messages API `messages` of the conversation's turns before `run`, oldest first (see the module)."""
    earlier = list(
        Run.objects.filter(
            conversation_id=run.conversation_id,
            created_at__lt=run.created_at,
            status__in=[Run.Status.COMPLETED, Run.Status.INTERRUPTED],
        )
        .order_by("-created_at")
        .values_list("pk", "input", "status", "result")[:HISTORY_TURNS]
    )
    partial = _texts_of([pk for pk, _, status, _ in earlier if status == Run.Status.INTERRUPTED])
    turns: list[tuple[str, str]] = []
    size = 0
    for pk, said, status, result in earlier:  # newest first
        answer = ((result or {}).get("result") or "") if status == Run.Status.COMPLETED else partial.get(pk, "")
        if not isinstance(answer, str) or not said.strip() or not answer.strip():
            continue
        size += len(said) + len(answer)
        if size > HISTORY_CHARS:
            break
        turns.append((said, answer))
    return [
        message
        for said, answer in reversed(turns)
        for message in ({"role": "user", "content": said}, {"role": "assistant", "content": answer})
    ]


def _texts_of(run_ids: Sequence[Any]) -> dict[Any, str]:
    """The text an interrupted run had answered, by run: its top-level `message` text blocks."""
    texts: dict[Any, str] = {}
    if not run_ids:
        return texts
    blocks = Event.objects.filter(run_id__in=run_ids, type=EventType.MESSAGE).order_by("seq")
    for run_id, data in blocks.values_list("run_id", "data"):
        block = data.get("block") or {}
        if block.get("type") == "text" and not data.get("parent_tool_use_id"):
            texts[run_id] = texts.get(run_id, "") + str(block.get("text", ""))
    return texts


def chat_request(run: Run, version: AgentVersion, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The Messages API body of the run's call: the version's instructions, thinking and effort, and the history."""
    max_tokens = run.model.max_output_tokens
    # The breakpoint on the newest message lets the next turn read this one's whole prefix from the cache.
    latest = {"role": "user", "content": [{"type": "text", "text": run.input, "cache_control": {"type": "ephemeral"}}]}
    body: dict[str, Any] = {
        "model": run.model.provider_model_id,
        "max_tokens": max_tokens,
        "messages": [*history, latest],
    }
    if version.instructions:
        body["system"] = version.instructions
    # The API wants a budget of at least 1,024 tokens, below max_tokens; 0 (or none) is no thinking.
    if version.thinking_budget and max_tokens > MIN_THINKING_TOKENS:
        budget = min(max(version.thinking_budget, MIN_THINKING_TOKENS), max_tokens - 1)
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if version.effort:
        body["output_config"] = {"effort": version.effort}
    return body


class ChatExecution:
    """The one model call of a chat run, its answer streamed into the run's events as it arrives.

    `emit` takes the run's events; `translator` is the run's, which places each call's `usage` event
    (the gateway's record of it) at the call's `message_delta`, as for the CLI's calls. `on_answering` hears
    that the answer has begun (the call was admitted and the model answers), once.
    """

    def __init__(
        self,
        gateway: ModelGateway,
        body: dict[str, Any],
        *,
        emit: Emit,
        translator: EventTranslator,
        on_answering: Callable[[], None] = lambda: None,
    ) -> None:
        self.gateway = gateway
        self.body = dict(body)
        self.emit = emit
        self.translator = translator
        self.on_answering = on_answering

    async def answer(self) -> ChatAnswer:
        """Make the call, retried while nothing has streamed yet; raises ModelFailed when it fails for good."""
        body = self.body
        retries = 0
        # No total timeout: the run's own (RUN_MAX_SECONDS) bounds the answer, and an interrupt ends it.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    return await self._call(session, body)
                except ModelFailed as failure:
                    if failure.refuses_effort and "output_config" in body:
                        logger.info("Model %s takes no effort setting; calling without it", body["model"])
                        body = {key: value for key, value in body.items() if key != "output_config"}
                        continue
                    if not failure.retryable or retries >= MODEL_RETRIES:
                        raise
                    retries += 1
                    delay = min(
                        failure.retry_after or RETRY_DELAY_SECONDS * 2 ** (retries - 1), MAX_RETRY_DELAY_SECONDS
                    )
                    self.emit(
                        EventType.MODEL_RETRY,
                        {
                            "attempt": retries,
                            "max_retries": MODEL_RETRIES,
                            "retry_delay_ms": round(delay * 1000),
                            "error_status": failure.status,
                            "error": "server_error" if failure.status is None else _error_kind(failure.status),
                        },
                    )
                    await asyncio.sleep(delay)

    async def _call(self, session: aiohttp.ClientSession, body: dict[str, Any]) -> ChatAnswer:
        call = self.gateway.streamed_call(body, betas=[EFFORT_BETA] if "output_config" in body else [])
        try:
            response = await session.post(call.url, data=call.body, headers=dict(call.headers))
        except aiohttp.ClientError as exc:
            raise ModelFailed(None, f"the gateway is unreachable ({type(exc).__name__})") from None
        async with response:
            if response.status != 200:
                raise ModelFailed(response.status, await _error_detail(response), _retry_after(response))
            self.on_answering()
            return await self._stream(response, call.events())

    async def _stream(self, response: aiohttp.ClientResponse, decoder: EventDecoder) -> ChatAnswer:
        """The answer's events, as they arrive: deltas at once, each block complete at its end, usage at
        `message_delta`."""
        message_id: str | None = None
        stop_reason: str | None = None
        texts: list[str] = []
        blocks: dict[int, dict[str, Any]] = {}  # the blocks still streaming, by index
        try:
            async for chunk in response.content.iter_any():
                for event in decoder.feed(chunk):
                    for kind, data in self.translator.api_event(event):
                        self.emit(kind, data)
                    match event.get("type"):
                        case "message_start":
                            message_id = (event.get("message") or {}).get("id")
                        case "content_block_start":
                            blocks[event.get("index", 0)] = _empty_block(event.get("content_block") or {})
                        case "content_block_delta":
                            _grow(blocks.get(event.get("index", 0)), event.get("delta") or {})
                        case "content_block_stop":
                            if (block := blocks.pop(event.get("index", 0), None)) is not None:
                                self._emit_block(block, message_id, texts)
                        case "message_delta":
                            stop_reason = (event.get("delta") or {}).get("stop_reason")
                        case "message_stop":
                            return ChatAnswer("".join(texts), stop_reason, message_id)
                        case "error":
                            raise ModelFailed(None, f"the answer broke off: {event.get('error')}", answering=True)
        except aiohttp.ClientError as exc:
            raise ModelFailed(None, f"the answer broke off ({type(exc).__name__})", answering=True) from None
        finally:
            # An answer cut short (an interrupt, a timeout, a failure) keeps what it had said.
            for block in blocks.values():
                self._emit_block(block, message_id, texts)
        raise ModelFailed(None, "the answer ended before its message_stop", answering=True)

    def _emit_block(self, block: dict[str, Any], message_id: str | None, texts: list[str]) -> None:
        if block["type"] == "text":
            if not block["text"]:
                return
            texts.append(block["text"])
        self.emit(*message_event(block, message_id, None))


def _empty_block(start: Mapping[str, Any]) -> dict[str, Any]:
    """A block as `message` events show it (text or thinking; any other kind is kept only by its type)."""
    kind = start.get("type")
    if kind == "text":
        return {"type": "text", "text": str(start.get("text") or "")}
    if kind == "thinking":
        return {"type": "thinking", "thinking": str(start.get("thinking") or "")}
    return {"type": str(kind)}


def _grow(block: dict[str, Any] | None, delta: Mapping[str, Any]) -> None:
    if block is None:
        return
    if delta.get("type") == "text_delta" and block["type"] == "text":
        block["text"] += str(delta.get("text", ""))
    elif delta.get("type") == "thinking_delta" and block["type"] == "thinking":
        block["thinking"] += str(delta.get("thinking", ""))


async def _error_detail(response: aiohttp.ClientResponse) -> str:
    """An error answer's message: the Anthropic shape, Bedrock's, or the start of whatever it was."""
    text = await response.text(errors="replace")
    with contextlib.suppress(ValueError, AttributeError):
        document = json.loads(text)
        error = document.get("error") if isinstance(document.get("error"), dict) else document
        if isinstance(error.get("message"), str):
            return str(error["message"])
    return text[:500]


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _error_kind(status: int) -> str:
    """The word the CLI's `model.retry` events use for a failed call's status."""
    if status == 429:
        return "rate_limit"
    return "server_error"
