"""Reading a model call's id and usage off its response bytes as they stream through the gateway."""

import json
from typing import Any

Json = dict[str, Any]

# Anthropic streams announce each event's type on its `event:` line; only these carry usage, so
# the data of every other event (the many content deltas) is neither kept nor parsed.
USAGE_EVENTS = frozenset({"message_start", "message_delta", "message_stop", "error"})


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
        self.settled = False  # the usage is final: message_delta (which carries the last figures) seen
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
            except (ValueError, RecursionError):
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
                self.settled = True
        elif kind == "message_stop":
            self.complete = self.settled = True
        elif kind == "error":
            error = event.get("error")
            self.error = error if isinstance(error, dict) else {"message": str(error)}

    def observe_message(self, message: Json) -> None:
        """Take a whole (non-streaming) Messages API answer, or its error body."""
        if message.get("type") == "error":
            self.observe_event(message)
            return
        self._observe_header(message)
        self.complete = self.settled = message.get("type") == "message"

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
        except (ValueError, RecursionError):
            return  # not ours to judge: the bytes go to the client unchanged either way
        if isinstance(event, dict):
            self.observe_event(event)
