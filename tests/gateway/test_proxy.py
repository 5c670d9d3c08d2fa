"""The egress proxy on its own: real sockets on loopback, names answered by a resolver the test controls.

Loopback is the only place a test may send traffic, so the operator's range setting allows 127.0.0.0/8 here;
every refusal of a private, link-local or metadata address happens before any socket is opened.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from pytest_django.fixtures import Settings

from gateway.allowlist import EgressPolicy, parse_rules
from gateway.proxy import EgressProxy

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def loopback_allowed(settings: Settings) -> None:
    settings.EGRESS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.EGRESS_DENY = []


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[int]:
    """An HTTP server on loopback that echoes what it was asked and with which Authorization."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "path": request.path_qs,
                "host": request.headers.get("Host"),
                "authorization": request.headers.get("Authorization"),
                "body": len(body),
            }
        )

    server = web.Server(echo)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


class Names:
    """A resolver whose answers the test sets (and changes: rebinding)."""

    def __init__(self, **answers: list[str]) -> None:
        self.answers = {name.replace("_", "."): addresses for name, addresses in answers.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.answers.get(host, [])


def policy(*allow: str, profile: list[str] | None = None, **kwargs: Any) -> EgressPolicy:
    return EgressPolicy(
        tenant=parse_rules(list(allow)),
        profile=None if profile is None else parse_rules(profile),
        **kwargs,
    )


@pytest_asyncio.fixture
async def proxy_for() -> AsyncIterator[Callable[..., Any]]:
    opened: list[EgressProxy] = []

    async def open_proxy(egress: EgressPolicy, names: Names) -> tuple[EgressProxy, list[dict[str, Any]]]:
        heard: list[dict[str, Any]] = []
        proxy = EgressProxy(egress, on_egress=heard.append, resolver=names)
        await proxy.__aenter__()
        opened.append(proxy)
        return proxy, heard

    yield open_proxy
    for proxy in opened:
        await proxy.__aexit__(None, None, None)


async def exchange(proxy: EgressProxy, request: bytes) -> bytes:
    """Send `request` to the proxy and read until it closes."""
    port = int(proxy.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def get(proxy: EgressProxy, url: str) -> bytes:
    host = url.split("/")[2]
    return await exchange(proxy, f"GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


async def settled(heard: list[dict[str, Any]], count: int = 1) -> None:
    for _ in range(200):
        if len(heard) >= count:
            return
        await asyncio.sleep(0.01)


async def test_an_allowed_name_is_fetched_and_reported_with_its_bytes(upstream: int, proxy_for: Any) -> None:
    proxy, heard = await proxy_for(policy(f"api.example.com:{upstream}"), Names(api_example_com=["127.0.0.1"]))

    answer = await get(proxy, f"http://api.example.com:{upstream}/hello?x=1")

    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b'"path": "/hello?x=1"' in answer
    await settled(heard)
    (event,) = heard
    assert event["allowed"] is True and event["host"] == "api.example.com" and event["port"] == upstream
    assert event["address"] == "127.0.0.1" and event["bytes_down"] == len(answer) and event["bytes_up"] > 0
    assert proxy.traffic.connections == 1


async def test_a_tunnel_carries_bytes_untouched(upstream: int, proxy_for: Any) -> None:
    proxy, heard = await proxy_for(policy(f"tunnel.example.com:{upstream}"), Names(tunnel_example_com=["127.0.0.1"]))
    port = int(proxy.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    writer.write(f"CONNECT tunnel.example.com:{upstream} HTTP/1.1\r\nHost: tunnel.example.com\r\n\r\n".encode())
    established = await reader.readuntil(b"\r\n\r\n")
    writer.write(b"GET /through HTTP/1.1\r\nHost: tunnel.example.com\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()

    assert established.startswith(b"HTTP/1.1 200")
    assert b'"path": "/through"' in answer
    await settled(heard)
    assert heard[0]["method"] == "CONNECT" and heard[0]["allowed"] and heard[0]["bytes_down"] == len(answer)


async def test_a_name_not_on_the_list_is_refused_with_why_and_who_can_allow_it(proxy_for: Any) -> None:
    names = Names(elsewhere_example_org=["127.0.0.1"])
    proxy, heard = await proxy_for(policy("api.example.com"), names)

    answer = await get(proxy, "http://elsewhere.example.org/")

    assert answer.startswith(b"HTTP/1.1 403 Egress refused: elsewhere.example.org:80 is not on the tenant's")
    assert b"egress allow-list" in answer and b"an operator or the tenant can allow" in answer
    await settled(heard)
    assert heard == [
        {
            "host": "elsewhere.example.org",
            "port": 80,
            "method": "GET",
            "allowed": False,
            "reason": "elsewhere.example.org:80 is not on the tenant's egress allow-list",
            "bytes_up": 0,
            "bytes_down": 0,
            "duration_ms": heard[0]["duration_ms"],
        }
    ]


@pytest.mark.parametrize(
    ("answers", "why"),
    [
        (["169.254.169.254"], b"the link-local cloud metadata address"),
        (["10.0.0.5"], b"a private address"),
        (["127.0.0.1", "192.168.1.1"], b"a private address"),  # one bad answer among good ones
    ],
)
async def test_an_allowed_name_that_resolves_somewhere_private_is_refused_before_dialing(
    answers: list[str], why: bytes, proxy_for: Any
) -> None:
    proxy, _ = await proxy_for(policy("inside.example.com"), Names(inside_example_com=answers))

    answer = await get(proxy, "http://inside.example.com/")

    assert answer.startswith(b"HTTP/1.1 403 Egress refused: inside.example.com resolves to")
    assert why in answer
    assert proxy.traffic.connections == 0


async def test_an_address_literal_is_checked_like_a_resolved_name(proxy_for: Any) -> None:
    proxy, _ = await proxy_for(policy("169.254.0.0/16:*"), Names())

    answer = await exchange(proxy, b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 403 Egress refused: 169.254.169.254 is the link-local cloud metadata address")


async def test_a_name_rebound_to_a_private_address_between_connections_is_refused(
    upstream: int, proxy_for: Any
) -> None:
    names = Names(rebind_example_com=["127.0.0.1"])
    proxy, _ = await proxy_for(policy(f"rebind.example.com:{upstream}"), names)
    first = await get(proxy, f"http://rebind.example.com:{upstream}/")

    names.answers["rebind.example.com"] = ["10.0.0.7"]
    second = await get(proxy, f"http://rebind.example.com:{upstream}/")

    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 403 Egress refused: rebind.example.com resolves to 10.0.0.7, a private address")


async def test_an_address_rule_allows_names_whose_every_address_it_covers(upstream: int, proxy_for: Any) -> None:
    names = Names(svc_internal_example=["127.0.0.1"], mixed_internal_example=["127.0.0.1", "127.1.0.1"])
    proxy, _ = await proxy_for(policy(f"127.0.0.0/24:{upstream}"), names)

    ok = await get(proxy, f"http://svc.internal.example:{upstream}/")
    mixed = await get(proxy, f"http://mixed.internal.example:{upstream}/")

    assert ok.startswith(b"HTTP/1.1 200")
    assert mixed.startswith(b"HTTP/1.1 403 Egress refused: mixed.internal.example:")
    assert b"is not on the tenant's egress allow-list" in mixed


async def test_a_profile_narrows_the_tenants_list_and_never_widens_it(upstream: int, proxy_for: Any) -> None:
    names = Names(a_example_com=["127.0.0.1"], b_example_com=["127.0.0.1"])
    egress = policy(f"a.example.com:{upstream}", profile=[f"a.example.com:{upstream}", f"b.example.com:{upstream}"])
    proxy, _ = await proxy_for(egress, names)
    narrower = policy(f"a.example.com:{upstream}", f"b.example.com:{upstream}", profile=[f"b.example.com:{upstream}"])
    narrowed, _ = await proxy_for(narrower, names)

    assert (await get(proxy, f"http://a.example.com:{upstream}/")).startswith(b"HTTP/1.1 200")
    widened = await get(proxy, f"http://b.example.com:{upstream}/")
    assert widened.startswith(b"HTTP/1.1 403 Egress refused: b.example.com:")
    assert b"not on the tenant's egress allow-list" in widened
    refused = await get(narrowed, f"http://a.example.com:{upstream}/")
    assert b"not on the agent profile's egress allow-list" in refused


async def test_the_platforms_deny_list_wins_over_any_allow_list(upstream: int, proxy_for: Any) -> None:
    egress = policy("*.example.com:*", deny=parse_rules(["secret.example.com:*"]))
    proxy, _ = await proxy_for(egress, Names(secret_example_com=["127.0.0.1"], open_example_com=["127.0.0.1"]))

    refused = await get(proxy, f"http://secret.example.com:{upstream}/")
    allowed = await get(proxy, f"http://open.example.com:{upstream}/")

    assert refused.startswith(b"HTTP/1.1 403 Egress refused: secret.example.com is on the platform's deny list")
    assert allowed.startswith(b"HTTP/1.1 200")


async def test_an_empty_list_lets_nothing_out(proxy_for: Any) -> None:
    proxy, _ = await proxy_for(EgressPolicy(), Names(api_example_com=["127.0.0.1"]))

    answer = await get(proxy, "http://api.example.com/")

    assert answer.startswith(b"HTTP/1.1 403 Egress refused: this run may not reach the network")


async def test_past_the_runs_connection_limit_the_next_is_refused(
    upstream: int, proxy_for: Any, settings: Settings
) -> None:
    settings.EGRESS_MAX_CONNECTIONS = 2
    proxy, _ = await proxy_for(policy(f"api.example.com:{upstream}"), Names(api_example_com=["127.0.0.1"]))

    answers = [await get(proxy, f"http://api.example.com:{upstream}/") for _ in range(3)]

    assert [answer[:12] for answer in answers] == [b"HTTP/1.1 200", b"HTTP/1.1 200", b"HTTP/1.1 403"]
    assert b"this run has tried its 2 connections (EGRESS_MAX_CONNECTIONS)" in answers[2]


async def test_past_the_runs_byte_limit_the_connection_is_cut_and_the_next_refused(
    upstream: int, proxy_for: Any, settings: Settings
) -> None:
    settings.EGRESS_MAX_BYTES = 10_000
    proxy, heard = await proxy_for(policy(f"api.example.com:{upstream}"), Names(api_example_com=["127.0.0.1"]))
    body = b"x" * 50_000
    head = f"POST http://api.example.com:{upstream}/up HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n"

    await exchange(proxy, head.encode() + body)
    after = await get(proxy, f"http://api.example.com:{upstream}/")

    await settled(heard, 2)
    assert heard[0]["reason"] == "this run has moved its 10000 bytes through the network (EGRESS_MAX_BYTES)"
    assert after.startswith(b"HTTP/1.1 403 Egress refused: this run has moved its 10000 bytes")


@pytest.mark.parametrize(
    ("request_head", "says"),
    [
        (b"GET https://api.example.com/ HTTP/1.1\r\n\r\n", b"is not an absolute http:// URL"),
        (b"GET /relative HTTP/1.1\r\n\r\n", b"is not an absolute http:// URL"),
        (b"CONNECT api.example.com HTTP/1.1\r\n\r\n", b"must read host:port"),
        (b"NONSENSE\r\n\r\n", b"the request line must read METHOD TARGET HTTP/1.1"),
    ],
)
async def test_a_request_the_proxy_cannot_act_on_gets_a_400_saying_why(
    request_head: bytes, says: bytes, proxy_for: Any
) -> None:
    proxy, heard = await proxy_for(policy("api.example.com"), Names())

    answer = await exchange(proxy, request_head)

    assert answer.startswith(b"HTTP/1.1 400") and says in answer
    assert heard == []


async def test_past_the_limit_refusals_are_counted_but_only_the_first_is_reported(
    proxy_for: Any, settings: Settings
) -> None:
    settings.EGRESS_MAX_CONNECTIONS = 3
    proxy, heard = await proxy_for(policy("api.example.com"), Names())

    for _ in range(10):
        await get(proxy, "http://elsewhere.example.org/")

    await settled(heard, 4)
    assert proxy.traffic.refused == 10
    assert len(heard) == 4
    assert heard[-1]["reason"] == "this run has tried its 3 connections (EGRESS_MAX_CONNECTIONS)"


async def test_a_plain_request_goes_to_the_host_its_url_names_whatever_its_host_header(
    upstream: int, proxy_for: Any
) -> None:
    proxy, _ = await proxy_for(policy(f"api.example.com:{upstream}"), Names(api_example_com=["127.0.0.1"]))

    answer = await exchange(
        proxy, f"GET http://api.example.com:{upstream}/x HTTP/1.1\r\nHost: elsewhere.example.org\r\n\r\n".encode()
    )

    assert answer.startswith(b"HTTP/1.1 200")
    assert f'"host": "api.example.com:{upstream}"'.encode() in answer


async def test_a_request_head_past_64_kib_gets_a_400_saying_so(proxy_for: Any) -> None:
    proxy, heard = await proxy_for(policy("api.example.com"), Names())

    answer = await exchange(proxy, b"GET http://api.example.com/ HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 400 Egress proxy: the request head is larger than 64 KiB")
    assert heard == []
