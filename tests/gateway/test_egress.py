"""Calls made for a tenant's MCP servers reach public addresses only.

Only loopback is ever dialed here: private, link-local and public addresses are classified, or reached
through a fake resolver with dialing itself replaced by a recorder that refuses every attempt."""

import asyncio
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
from aiohappyeyeballs import AddrInfoType
from aiohttp import web
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings

from gateway.egress import (
    EgressRefused,
    GuardedResolver,
    InvalidServerUrl,
    check_url,
    guarded_connector,
    guarded_socket,
    refusal_for,
    resolve_allowed,
)


@dataclass
class RecordingServer:
    """An HTTP server on one loopback address that counts the TCP connections it accepts."""

    host: str
    port: int = 0
    connections: int = 0
    paths: list[str] = field(default_factory=list)

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"


StartServer = Callable[..., Awaitable[RecordingServer]]


@pytest_asyncio.fixture
async def start_server() -> AsyncIterator[StartServer]:
    started: list[tuple[asyncio.Server, web.Server]] = []

    async def start(host: str, redirect_to: str | None = None) -> RecordingServer:
        recording = RecordingServer(host)

        async def answer(request: web.BaseRequest) -> web.StreamResponse:
            recording.paths.append(request.path)
            if redirect_to is not None:
                return web.Response(status=302, headers={"Location": redirect_to})
            return web.Response(text=f"hello from {host}")

        handler = web.Server(answer)

        def accept() -> asyncio.Protocol:
            recording.connections += 1
            return handler()

        try:
            server = await asyncio.get_running_loop().create_server(accept, host, 0)
        except OSError as error:
            pytest.skip(f"cannot bind a test server to {host}: {error}")
        recording.port = server.sockets[0].getsockname()[1]
        started.append((server, handler))
        return recording

    yield start

    for server, handler in started:
        server.close()
        await handler.shutdown(timeout=1)
        await server.wait_closed()


@pytest.fixture
def allow_127_0_0_2(settings: Settings) -> None:
    settings.EGRESS_ALLOWED_NETWORKS = ["127.0.0.2/32"]


@pytest.fixture
def dial_attempts(monkeypatch: pytest.MonkeyPatch) -> list[AddrInfoType]:
    """Every address aiohttp tries to connect to, none of them dialed: the guard must refuse before this."""
    attempts: list[AddrInfoType] = []

    async def refuse_to_dial(addr_infos: list[AddrInfoType], **_options: object) -> socket.socket:
        attempts.extend(addr_infos)
        raise OSError("the test refuses to dial anything")

    monkeypatch.setattr("aiohappyeyeballs.start_connection", refuse_to_dial)
    return attempts


def resolving(answers: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    return resolve


async def get(
    url: str, resolver: Callable[[str, int], Awaitable[list[str]]] | None = None, *, allow_redirects: bool = False
) -> str:
    """GET as callers do: through the guarded connector, not following redirects."""
    async with (
        aiohttp.ClientSession(connector=guarded_connector(resolver)) as session,
        session.get(url, allow_redirects=allow_redirects) as response,
    ):
        return await response.text()


# --- Classifying addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.0.0.2", "a loopback address"),
        ("::1", "a loopback address"),
        ("169.254.169.254", "the link-local cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("100.64.0.1", "a carrier-grade NAT address"),
        ("0.0.0.0", "an unspecified address"),  # noqa: S104 (classified, never bound)
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("255.255.255.255", "the broadcast address"),
        ("240.0.0.1", "a reserved address"),
        ("192.0.2.1", "a special-purpose address"),
        ("::ffff:10.0.0.1", "an IPv4-mapped form of 10.0.0.1, a private address"),
        ("::ffff:127.0.0.1", "an IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("64:ff9b::a9fe:a9fe", "a NAT64 form of 169.254.169.254, the link-local cloud metadata address"),
        ("2002:a00:1::", "a 6to4 form of 10.0.0.1, a private address"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "a Teredo form of 10.0.0.1, a private address"),
        ("::a00:1", "a reserved address"),
    ],
)
def test_private_and_special_addresses_are_refused_with_their_reason(address: str, reason: str) -> None:
    assert refusal_for(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal_for(ipaddress.ip_address(address)) is None


def test_an_allowed_network_opens_only_itself(allow_127_0_0_2: None) -> None:
    assert refusal_for(ipaddress.ip_address("127.0.0.2")) is None
    assert refusal_for(ipaddress.ip_address("::ffff:127.0.0.2")) is None
    assert refusal_for(ipaddress.ip_address("127.0.0.1")) == "a loopback address"


def test_a_malformed_allowed_network_is_a_configuration_error(settings: Settings) -> None:
    settings.EGRESS_ALLOWED_NETWORKS = ["10.1.0.0/16", "10.1.2.3/16"]

    with pytest.raises(
        ImproperlyConfigured, match=re.escape("EGRESS_ALLOWED_NETWORKS holds '10.1.2.3/16', which is not a network")
    ):
        refusal_for(ipaddress.ip_address("8.8.8.8"))


# --- Checking a URL when a server is saved ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://169.254.169.254/latest/meta-data",
            "169.254.169.254 is the link-local cloud metadata address; calls made for tenants",
        ),
        ("http://[::1]:8080/mcp", "::1 is a loopback address"),
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("https://192.168.1.1:8443/mcp", "192.168.1.1 is a private address"),
        ("http://[::ffff:10.0.0.1]/", "an IPv4-mapped form of 10.0.0.1, a private address"),
        ("http://[fe80::1%25eth0]/", "a link-local address"),
        ("http://2130706433/", "2130706433 means 127.0.0.1, a loopback address"),
        ("http://0x7f000001/", "0x7f000001 means 127.0.0.1, a loopback address"),
        ("http://0x7f.1/", "0x7f.1 means 127.0.0.1, a loopback address"),
        ("http://017700000001/", "017700000001 means 127.0.0.1, a loopback address"),
        ("http://127.1/", "127.1 means 127.0.0.1, a loopback address"),
        ("http://127.0.0.1./", "127.0.0.1. means 127.0.0.1, a loopback address"),
        ("http://0/", "0 means 0.0.0.0, an unspecified address"),
    ],
)
def test_urls_naming_a_private_address_are_refused_whatever_the_spelling(url: str, message: str) -> None:
    with pytest.raises(EgressRefused, match="EGRESS_ALLOWED_NETWORKS") as refused:
        check_url(url)

    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://mcp.example.com/", "is not an http or https URL"),
        ("mcp.example.com/mcp", "is not an http or https URL"),
        ("file:///etc/passwd", "is not an http or https URL"),
        ("http:///mcp", "names no host"),
        ("http://user:pass@mcp.example.com/", "must not carry a user name or password"),
        ("http://token@mcp.example.com/", "must not carry a user name or password"),
        ("http://mcp example.com/", "neither a domain name nor an IP address"),
    ],
)
def test_urls_that_cannot_be_called_are_invalid(url: str, message: str) -> None:
    with pytest.raises(InvalidServerUrl, match=re.escape(message)):
        check_url(url)


def test_the_refusal_of_credentials_does_not_repeat_them() -> None:
    with pytest.raises(InvalidServerUrl) as invalid:
        check_url("https://user:hunter2@mcp.example.com/mcp")

    assert "hunter2" not in str(invalid.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://mcp.example.com/mcp",
        "http://MCP.Example.com:8080/sse",
        "https://ünicode.example/",
        "https://8.8.8.8/",
        "http://[2606:4700::1111]/",
    ],
)
def test_public_urls_are_accepted_without_resolving_their_names(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("check_url must not resolve names")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket, "gethostbyname", no_dns)

    check_url(url)


def test_an_allowed_network_may_be_named_in_a_url(allow_127_0_0_2: None) -> None:
    check_url("http://127.0.0.2:8000/mcp")

    with pytest.raises(EgressRefused):
        check_url("http://127.0.0.1:8000/mcp")


# --- Resolving a name at call time ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_name_with_public_addresses_resolves_to_them() -> None:
    resolver = resolving({"mcp.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]})

    addresses = await resolve_allowed("mcp.example.com", 443, resolver=resolver)

    assert addresses == ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]


@pytest.mark.asyncio
async def test_one_private_record_among_public_ones_refuses_the_name() -> None:
    resolver = resolving({"rebind.example.com": ["93.184.216.34", "10.0.0.1"]})

    with pytest.raises(EgressRefused) as refused:
        await resolve_allowed("rebind.example.com", 443, resolver=resolver)

    assert str(refused.value).startswith(
        "rebind.example.com resolves to 10.0.0.1, a private address; calls made for tenants"
    )


@pytest.mark.asyncio
async def test_a_name_for_the_metadata_service_is_refused() -> None:
    resolver = resolving({"metadata.example.com": ["169.254.169.254"]})

    with pytest.raises(
        EgressRefused,
        match=re.escape("metadata.example.com resolves to 169.254.169.254, the link-local cloud metadata address"),
    ):
        await resolve_allowed("metadata.example.com", 80, resolver=resolver)


@pytest.mark.asyncio
async def test_a_literal_host_is_checked_without_a_resolver() -> None:
    with pytest.raises(EgressRefused, match=re.escape("2130706433 means 127.0.0.1, a loopback address")):
        await resolve_allowed("2130706433", 80, resolver=resolving({}))


@pytest.mark.asyncio
async def test_the_aiohttp_resolver_answers_checked_addresses_of_the_family_asked() -> None:
    resolver = GuardedResolver(resolving({"mcp.example.com": ["93.184.216.34", "2606:4700::1111"]}))

    answers = await resolver.resolve("mcp.example.com", 443, family=socket.AF_INET)

    assert answers == [
        {
            "hostname": "mcp.example.com",
            "host": "93.184.216.34",
            "port": 443,
            "family": socket.AF_INET,
            "proto": 0,
            "flags": socket.AI_NUMERICHOST,
        }
    ]


# --- Connecting through the guarded connector (loopback only) -------------------------------------------


@pytest.mark.asyncio
async def test_an_allowed_loopback_address_is_reached(start_server: StartServer, allow_127_0_0_2: None) -> None:
    server = await start_server("127.0.0.2")

    body = await get(server.url("/mcp"))

    assert body == "hello from 127.0.0.2"
    assert server.paths == ["/mcp"]


@pytest.mark.asyncio
async def test_a_literal_loopback_address_is_refused_before_connecting(
    start_server: StartServer, allow_127_0_0_2: None
) -> None:
    server = await start_server("127.0.0.1")

    with pytest.raises(EgressRefused, match=r"^127\.0\.0\.1 is a loopback address; calls made for tenants"):
        await get(server.url())

    assert server.connections == 0


@pytest.mark.asyncio
async def test_a_numeric_spelling_of_loopback_is_refused_before_connecting(start_server: StartServer) -> None:
    server = await start_server("127.0.0.1")

    with pytest.raises(EgressRefused, match=re.escape("means 127.0.0.1, a loopback address")):
        await get(server.url(host="2130706433"))
    with pytest.raises(EgressRefused, match=re.escape("means 127.0.0.1, a loopback address")):
        await get(server.url(host="0x7f.1"))

    assert server.connections == 0


@pytest.mark.asyncio
async def test_a_name_resolving_to_loopback_is_refused_before_connecting(
    start_server: StartServer, allow_127_0_0_2: None
) -> None:
    server = await start_server("127.0.0.1")

    with pytest.raises(EgressRefused, match=re.escape("tool.test resolves to 127.0.0.1, a loopback address")):
        await get(server.url(host="tool.test"), resolving({"tool.test": ["127.0.0.1"]}))

    assert server.connections == 0


@pytest.mark.asyncio
async def test_a_name_resolving_to_an_allowed_address_is_reached(
    start_server: StartServer, allow_127_0_0_2: None
) -> None:
    server = await start_server("127.0.0.2")

    body = await get(server.url("/sse", host="tool.test"), resolving({"tool.test": ["127.0.0.2"]}))

    assert body == "hello from 127.0.0.2"


@pytest.mark.asyncio
async def test_each_connection_resolves_afresh_so_a_rebinding_name_is_caught(
    start_server: StartServer, allow_127_0_0_2: None
) -> None:
    allowed, private = await start_server("127.0.0.2"), await start_server("127.0.0.1")
    answers = iter([["127.0.0.2"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    async with aiohttp.ClientSession(connector=guarded_connector(rebinding)) as session:
        async with session.get(allowed.url(host="tool.test"), allow_redirects=False) as response:
            assert response.status == 200
        with pytest.raises(EgressRefused, match=re.escape("tool.test resolves to 127.0.0.1")):
            await session.get(private.url(host="tool.test"), allow_redirects=False)

    assert private.connections == 0


@pytest.mark.asyncio
async def test_a_redirect_to_a_refused_address_is_refused_even_when_followed(
    start_server: StartServer, allow_127_0_0_2: None
) -> None:
    private = await start_server("127.0.0.1")
    redirecting = await start_server("127.0.0.2", redirect_to=private.url("/admin"))

    with pytest.raises(EgressRefused, match=re.escape("127.0.0.1 is a loopback address")):
        await get(redirecting.url(), allow_redirects=True)

    assert redirecting.paths == ["/"]
    assert private.connections == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("url", "answers", "message"),
    [
        ("http://169.254.169.254/latest/meta-data", {}, "169.254.169.254 is the link-local cloud metadata address"),
        ("http://10.0.0.1/", {}, "10.0.0.1 is a private address"),
        ("http://[fd00::1]/", {}, "fd00::1 is a private address"),
        ("http://[::ffff:a9fe:a9fe]/", {}, "an IPv4-mapped form of 169.254.169.254"),
        ("http://tool.test/", {"tool.test": ["10.0.0.1"]}, "tool.test resolves to 10.0.0.1, a private address"),
        ("http://tool.test/", {"tool.test": ["8.8.8.8", "169.254.169.254"]}, "tool.test resolves to 169.254.169.254"),
    ],
)
async def test_private_destinations_are_refused_without_a_dial_attempt(
    url: str, answers: dict[str, list[str]], message: str, dial_attempts: list[AddrInfoType]
) -> None:
    with pytest.raises(EgressRefused, match=re.escape(message)):
        await get(url, resolving(answers))

    assert dial_attempts == []


@pytest.mark.asyncio
async def test_a_public_name_is_handed_to_dialing_as_its_checked_address(dial_attempts: list[AddrInfoType]) -> None:
    with pytest.raises(aiohttp.ClientConnectorError):
        await get("http://tool.test/", resolving({"tool.test": ["93.184.216.34"]}))

    assert [addr_info[4][0] for addr_info in dial_attempts] == ["93.184.216.34"]


@pytest.mark.asyncio
async def test_the_socket_factory_alone_refuses_a_refused_address(
    start_server: StartServer, allow_127_0_0_2: None
) -> None:
    """The last line, for an aiohttp that no longer calls the overridden `_resolve_host`."""
    allowed, private = await start_server("127.0.0.2"), await start_server("127.0.0.1")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=guarded_socket)) as session:
        async with session.get(allowed.url(), allow_redirects=False) as response:
            assert await response.text() == "hello from 127.0.0.2"
        with pytest.raises(aiohttp.ClientConnectorError, match=re.escape("127.0.0.1 is a loopback address")):
            await session.get(private.url(), allow_redirects=False)

    assert private.connections == 0
