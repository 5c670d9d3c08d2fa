"""UsageTap reads a model call's id and usage off the raw response bytes, however they are chunked."""

import asyncio
import json
import random
from decimal import Decimal
from typing import Any

import pytest

from gateway.metering import SSEDecoder, UsageTap
from gateway.upstreams.offline import respond
from tenants.models import LanguageModel, normalize_usage

USAGE_DIRECTIVE = "[[usage input=1200 output=300 cache_read=5000 cache_write_5m=700 cache_write_1h=100]]"
EXPECTED_USAGE = {
    "input_tokens": 1200,
    "output_tokens": 300,
    "cache_write_5m_tokens": 700,
    "cache_write_1h_tokens": 100,
    "cache_read_tokens": 5000,
}


def offline_reply(text: str, *, stream: bool = True) -> list[bytes]:
    """The offline model's answer to one user message, chunk by chunk as the gateway relays it."""
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "stream": stream,
            "messages": [{"role": "user", "content": text}],
        }
    ).encode()

    async def collect() -> list[bytes]:
        reply = await respond("/v1/messages", body, {})
        assert reply.status == 200
        return [chunk async for chunk in reply.body]

    return asyncio.run(collect())


def tapped(chunks: list[bytes]) -> UsageTap:
    tap = UsageTap()
    for chunk in chunks:
        tap.feed(chunk)
    tap.close()
    return tap


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.fixture(scope="module")
def offline_stream() -> list[bytes]:
    return offline_reply(f"Count my tokens. {USAGE_DIRECTIVE}")


@pytest.mark.parametrize(
    "rechunk",
    [
        pytest.param(lambda chunks: chunks, id="as-streamed"),
        pytest.param(lambda chunks: [b"".join(chunks)], id="one-chunk"),
        pytest.param(lambda chunks: split_every(b"".join(chunks), 1), id="one-byte-at-a-time"),
        pytest.param(lambda chunks: split_every(b"".join(chunks), 7), id="seven-bytes"),
        pytest.param(lambda chunks: split_randomly(b"".join(chunks), 1), id="random-cuts-1"),
        pytest.param(lambda chunks: split_randomly(b"".join(chunks), 2), id="random-cuts-2"),
        pytest.param(lambda chunks: split_every(b"".join(chunks).replace(b"\n", b"\r\n"), 3), id="crlf-3-bytes"),
    ],
)
def test_the_offline_models_stream_gives_exactly_the_scripted_usage(offline_stream: list[bytes], rechunk: Any) -> None:
    tap = tapped(rechunk(offline_stream))

    assert tap.message_id is not None and tap.message_id.startswith("msg_offline_")
    assert tap.model == "claude-sonnet-4-5"
    assert tap.complete and tap.has_usage and tap.error is None
    assert normalize_usage(tap.usage) == EXPECTED_USAGE
    assert tap.usage["cache_creation_input_tokens"] == 800


def test_a_non_streaming_json_answer_gives_the_same_usage() -> None:
    chunks = offline_reply(f"Count my tokens. {USAGE_DIRECTIVE}", stream=False)

    for rechunked in (chunks, split_every(b"".join(chunks), 1)):
        tap = tapped(rechunked)

        assert tap.message_id is not None and tap.message_id.startswith("msg_offline_")
        assert tap.complete
        assert normalize_usage(tap.usage) == EXPECTED_USAGE


def test_the_message_id_is_known_as_soon_as_message_start_has_arrived(offline_stream: list[bytes]) -> None:
    tap = UsageTap()

    tap.feed(offline_stream[0])

    assert tap.message_id is not None and tap.message_id.startswith("msg_offline_")
    assert tap.usage["input_tokens"] == 1200
    assert tap.usage["output_tokens"] == 0  # the final count comes with message_delta
    assert not tap.complete


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def test_message_delta_updates_output_and_a_null_never_erases_a_figure() -> None:
    # The real API's message_start reports output_tokens 1, message_delta the final figure.
    start_usage = {
        "input_tokens": 10,
        "output_tokens": 1,
        "cache_read_input_tokens": 20,
        "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 0},
    }
    stream = sse(
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": start_usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 42, "input_tokens": None},
        },
        {"type": "message_stop"},
    )

    tap = tapped(split_every(stream, 5))

    assert normalize_usage(tap.usage) == {
        "input_tokens": 10,
        "output_tokens": 42,
        "cache_write_5m_tokens": 30,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 20,
    }


def test_a_stream_cut_off_before_message_stop_keeps_what_message_start_said() -> None:
    stream = sse(
        {"type": "message_start", "message": {"id": "msg_2", "usage": {"input_tokens": 5, "output_tokens": 1}}}
    )

    tap = tapped([stream[:-1]])  # not even the final blank line arrived

    assert tap.message_id == "msg_2"
    assert tap.usage == {"input_tokens": 5, "output_tokens": 1}
    assert not tap.complete


def test_an_error_body_has_no_usage_and_says_why() -> None:
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()

    tap = tapped(split_every(body, 4))

    assert not tap.has_usage and tap.message_id is None
    assert tap.error == {"type": "overloaded_error", "message": "Overloaded"}


def test_an_error_event_mid_stream_is_reported() -> None:
    stream = sse(
        {"type": "message_start", "message": {"id": "msg_3", "usage": {"input_tokens": 5}}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )

    tap = tapped([stream])

    assert tap.has_usage and not tap.complete
    assert tap.error == {"type": "overloaded_error", "message": "Overloaded"}


def test_observe_event_takes_anthropic_events_from_any_framing() -> None:
    tap = UsageTap()

    tap.observe_event({"type": "message_start", "message": {"id": "msg_4", "usage": {"input_tokens": 9}}})
    tap.observe_event({"type": "message_delta", "usage": {"output_tokens": 4}})
    tap.observe_event({"type": "message_stop"})

    assert (tap.message_id, tap.usage, tap.complete) == ("msg_4", {"input_tokens": 9, "output_tokens": 4}, True)


def test_the_decoder_skips_the_data_of_events_it_was_not_asked_for() -> None:
    decoder = SSEDecoder(frozenset({"message_start"}))
    stream = b': keep-alive\n\nevent: ping\ndata: not json at all\n\nevent: message_start\ndata: {"a":\ndata: 1}\n\n'

    events = [event for byte in split_every(stream, 1) for event in decoder.feed(byte)]

    assert events == [("message_start", '{"a":\n1}')]


def test_cost_of_the_scripted_call_matches_a_hand_computation(offline_stream: list[bytes]) -> None:
    sonnet = LanguageModel(
        input_price=Decimal("3"),
        output_price=Decimal("15"),
        cache_write_5m_price=Decimal("3.75"),
        cache_write_1h_price=Decimal("6"),
        cache_read_price=Decimal("0.30"),
    )

    cost = sonnet.cost(tapped(offline_stream).usage)

    # 1200 * 3 + 300 * 15 + 700 * 3.75 + 100 * 6 + 5000 * 0.30 = 12 825 USD per million tokens
    assert cost.quantize(Decimal("1e-10")) == Decimal("0.0128250000")
