"""HTTPS requests to a host with secret headers: the proxy answers the sandbox's TLS with the deployment CA,
adds the tenant's headers on the way out, and passes everything else through.

Everything is real and on loopback: an HTTPS upstream (aiohttp, its certificate from a test CA the proxy
trusts through EGRESS_UPSTREAM_CA_FILE) that echoes what it got, a minimal CONNECT front standing where the
egress proxy calls `intercept`, and clients (curl, Python's ssl) that trust only the sandbox bundle."""

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from pytest_django.fixtures import Settings

from gateway import tls
from gateway.intercept import intercept
from gateway.tls import CertificateAuthority, issue_leaf, sandbox_ca_bundle

HOST = "api.example.test"
SECRET = "Bearer s3cret-token-never-in-the-sandbox"
MB = 1024 * 1024

pytestmark = pytest.mark.asyncio


class LimitReached(Exception):
    """Stands for gateway.proxy.EgressLimitReached."""


@dataclass
class Meter:
    """The proxy's per-connection meter, as `intercept` sees it."""

    limit: int = 1 << 40
    up: int = 0
    down: int = 0

    def sent(self, count: int) -> None:
        self.up += count
        self._check()

    def received(self, count: int) -> None:
        self.down += count
        self._check()

    def _check(self) -> None:
        if self.up + self.down > self.limit:
            raise LimitReached("past the run's bytes")


@dataclass
class Upstream:
    """An HTTPS server that records each request it gets: /echo answers with what it saw, /bytes/N sends N bytes."""

    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0


@dataclass
class Front:
    """The part of the egress proxy before `intercept`: answer one CONNECT, then hand the connection over."""

    headers: dict[str, str]
    port: int = 0
    limit: int = 1 << 40
    connects: list[str] = field(default_factory=list)
    meters: list[Meter] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b"\r\n")[0].decode().split(" ")[1]
        host, port = target.rsplit(":", 1)
        self.connects.append(target)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        meter = Meter(self.limit)
        self.meters.append(meter)
        try:
            await intercept(
                reader,
                writer,
                host=host,
                port=int(port),
                address="127.0.0.1",  # what the proxy resolved and checked: the name is never resolved here
                headers=self.headers,
                traffic=meter,
                connect_timeout=5.0,
            )
        except Exception as error:
            self.errors.append(error)
        finally:
            writer.close()


def server_context(ca: CertificateAuthority, host: str, directory: Path) -> ssl.SSLContext:
    chain, key = issue_leaf(ca, host)
    (directory / f"{host}.pem").write_bytes(chain + key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / f"{host}.pem")
    return context


@pytest.fixture
def upstream_ca(settings: Settings, tmp_path: Path) -> CertificateAuthority:
    """The CA of the test's 'public' servers, trusted by the proxy (as a public root would be), not by the sandbox."""
    ca = CertificateAuthority(*tls._new_ca())
    (tmp_path / "upstream-ca.pem").write_bytes(ca.certificate_pem)
    settings.EGRESS_UPSTREAM_CA_FILE = str(tmp_path / "upstream-ca.pem")
    settings.RUN_ROOT = tmp_path / "runs"
    settings.EGRESS_CA_CERT_FILE = settings.EGRESS_CA_KEY_FILE = ""
    return ca


StartUpstream = Callable[..., Awaitable[Upstream]]


@pytest_asyncio.fixture
async def start_upstream(upstream_ca: CertificateAuthority, tmp_path: Path) -> AsyncIterator[StartUpstream]:
    servers: list[tuple[asyncio.Server, web.Server]] = []

    async def start(certificate_host: str = HOST, ca: CertificateAuthority | None = None) -> Upstream:
        upstream = Upstream()

        async def answer(request: web.BaseRequest) -> web.StreamResponse:
            if request.headers.get("Expect", "").lower() == "100-continue":
                # What aiohttp's router does for its applications (curl waits a second for it).
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            digest, length = hashlib.sha256(), 0
            async for data in request.content.iter_chunked(64 * 1024):
                digest.update(data)
                length += len(data)
            seen = {
                "method": request.method,
                "path": request.path,
                "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in request.raw_headers],
                "chunked": request.headers.get("Transfer-Encoding") == "chunked",
                "body_length": length,
                "body_sha256": digest.hexdigest(),
            }
            upstream.requests.append(seen)
            if request.path.startswith("/bytes/"):
                size = int(request.path.rsplit("/", 1)[1])
                response = web.StreamResponse(headers={"Content-Length": str(size)})
                await response.prepare(request)
                block = b"x" * (64 * 1024)
                for offset in range(0, size, len(block)):
                    await response.write(block[: size - offset])
                await response.write_eof()
                return response
            return web.json_response(seen)

        handler = web.Server(answer)

        def accept() -> asyncio.Protocol:
            upstream.connections += 1
            return handler()

        context = server_context(ca or upstream_ca, certificate_host, tmp_path)
        server = await asyncio.get_running_loop().create_server(accept, "127.0.0.1", 0, ssl=context)
        upstream.port = server.sockets[0].getsockname()[1]
        servers.append((server, handler))
        return upstream

    yield start

    for server, handler in servers:
        server.close()
        await handler.shutdown(timeout=1)


StartFront = Callable[..., Awaitable[Front]]


@pytest_asyncio.fixture
async def start_front(upstream_ca: CertificateAuthority) -> AsyncIterator[StartFront]:
    servers: list[asyncio.Server] = []

    async def start(headers: dict[str, str] | None = None, limit: int = 1 << 40) -> Front:
        front = Front({"Authorization": SECRET} if headers is None else headers, limit=limit)
        server = await asyncio.start_server(front.serve, "127.0.0.1", 0, limit=64 * 1024)
        front.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return front

    yield start

    for server in servers:
        server.close()


async def curl(front: Front, *arguments: str, trust_bundle: bool = True) -> tuple[int, bytes, bytes]:
    """curl through the front as a tool in the sandbox would: trusting the sandbox bundle and nothing else."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    trust = ["--cacert", str(sandbox_ca_bundle())] if trust_bundle else []
    process = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--proxy",
        front.url,
        *trust,
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ["PATH"]},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


def header_values(request: dict[str, Any], name: str) -> list[str]:
    return [value for header, value in request["headers"] if header.lower() == name.lower()]


async def open_tunnel(
    front: Front, port: int, *, host: str = HOST, alpn: list[str] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection through the front's CONNECT, as a client trusting only the sandbox bundle makes one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(sandbox_ca_bundle()))
    if alpn:
        context.set_alpn_protocols(alpn)
    await writer.start_tls(context, server_hostname=host)
    return reader, writer


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
    lines = head.split("\r\n")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ")[1]), headers, body


# --- The tenant's headers on the way out ---------------------------------------------------------------------


async def test_the_tenants_header_reaches_the_upstream(start_upstream: StartUpstream, start_front: StartFront) -> None:
    upstream = await start_upstream()
    front = await start_front()

    status, stdout, stderr = await curl(front, f"https://{HOST}:{upstream.port}/echo")

    assert status == 0, stderr
    seen = json.loads(stdout)
    assert header_values(seen, "Authorization") == [SECRET]
    assert header_values(seen, "Host") == [f"{HOST}:{upstream.port}"]
    assert front.errors == []


async def test_a_client_sent_authorization_is_replaced_not_sent_beside_it(
    start_upstream: StartUpstream, start_front: StartFront
) -> None:
    upstream = await start_upstream()
    front = await start_front()

    status, stdout, stderr = await curl(
        front,
        f"https://{HOST}:{upstream.port}/echo",
        "-H",
        "Authorization: Bearer the-agents-guess",
        "-H",
        "authorization: another",
        "-H",
        "Proxy-Authorization: Basic eDp5",
        "-H",
        "X-Kept: yes",
    )

    assert status == 0, stderr
    seen = json.loads(stdout)
    assert header_values(seen, "Authorization") == [SECRET]
    assert header_values(seen, "Proxy-Authorization") == []
    assert header_values(seen, "X-Kept") == ["yes"]


async def test_every_request_on_a_kept_alive_connection_gets_the_header(
    start_upstream: StartUpstream, start_front: StartFront
) -> None:
    upstream = await start_upstream()
    front = await start_front()

    status, _, stderr = await curl(
        front, f"https://{HOST}:{upstream.port}/echo?1", f"https://{HOST}:{upstream.port}/echo?2", "-o", "/dev/null"
    )

    assert status == 0, stderr
    assert len(front.connects) == 1
    assert upstream.connections == 1
    assert [header_values(seen, "Authorization") for seen in upstream.requests] == [[SECRET], [SECRET]]


async def test_a_chunked_body_passes_whole_and_chunked(
    start_upstream: StartUpstream, start_front: StartFront, tmp_path: Path
) -> None:
    upstream = await start_upstream()
    front = await start_front()
    body = os.urandom(3 * MB + 17)
    (tmp_path / "body").write_bytes(body)

    status, stdout, stderr = await curl(
        front,
        f"https://{HOST}:{upstream.port}/echo",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        f"@{tmp_path / 'body'}",
    )

    assert status == 0, stderr
    seen = json.loads(stdout)
    assert seen["chunked"] is True
    assert (seen["body_length"], seen["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert header_values(seen, "Authorization") == [SECRET]


async def test_a_10_mb_upload_passes_whole_and_is_counted(
    start_upstream: StartUpstream, start_front: StartFront, tmp_path: Path
) -> None:
    upstream = await start_upstream()
    front = await start_front()
    body = os.urandom(10 * MB)
    (tmp_path / "body").write_bytes(body)

    status, stdout, stderr = await curl(
        front, f"https://{HOST}:{upstream.port}/echo", "--data-binary", f"@{tmp_path / 'body'}"
    )

    assert status == 0, stderr
    seen = json.loads(stdout)
    assert (seen["body_length"], seen["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    (meter,) = front.meters
    assert len(body) < meter.up < len(body) + 1024  # the body and one head
    assert len(stdout) < meter.down < len(stdout) + 1024


async def test_a_10_mb_download_passes_whole_and_is_counted(
    start_upstream: StartUpstream, start_front: StartFront, tmp_path: Path
) -> None:
    upstream = await start_upstream()
    front = await start_front()

    status, _, stderr = await curl(
        front, f"https://{HOST}:{upstream.port}/bytes/{10 * MB}", "-o", str(tmp_path / "download")
    )

    assert status == 0, stderr
    assert (tmp_path / "download").stat().st_size == 10 * MB
    (meter,) = front.meters
    assert 10 * MB < meter.down < 10 * MB + 1024
    assert header_values(upstream.requests[0], "Authorization") == [SECRET]


async def test_http_2_is_never_agreed(start_upstream: StartUpstream, start_front: StartFront) -> None:
    upstream = await start_upstream()
    front = await start_front()

    reader, writer = await open_tunnel(front, upstream.port, alpn=["h2", "http/1.1"])
    writer.write(f"GET /echo HTTP/1.1\r\nHost: {HOST}:{upstream.port}\r\n\r\n".encode())
    status, _, body = await read_response(reader)

    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    assert status == 200
    assert header_values(json.loads(body), "Authorization") == [SECRET]
    writer.close()


# --- What is refused, and why the client is told ---------------------------------------------------------------


async def test_an_upstream_with_an_untrusted_certificate_gets_nothing_and_the_client_a_502_saying_why(
    start_upstream: StartUpstream, start_front: StartFront
) -> None:
    upstream = await start_upstream(ca=CertificateAuthority(*tls._new_ca()))
    front = await start_front()

    status, stdout, stderr = await curl(front, f"https://{HOST}:{upstream.port}/echo", "-w", "%{http_code}")

    assert status == 0, stderr
    assert stdout.endswith(b"502")
    assert b"the certificate of api.example.test" in stdout and b"was not trusted" in stdout
    assert b"self-signed certificate in certificate chain" in stdout
    assert upstream.requests == []


async def test_an_upstream_whose_certificate_names_another_host_gets_nothing(
    start_upstream: StartUpstream, start_front: StartFront
) -> None:
    upstream = await start_upstream(certificate_host="other.example.test")
    front = await start_front()

    status, stdout, stderr = await curl(front, f"https://{HOST}:{upstream.port}/echo", "-w", "%{http_code}")

    assert status == 0, stderr
    assert stdout.endswith(b"502")
    assert b"was not trusted" in stdout and b"Hostname mismatch" in stdout
    assert upstream.requests == []


async def test_an_upstream_that_is_not_listening_is_a_502(start_front: StartFront) -> None:
    front = await start_front()
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()

    status, stdout, stderr = await curl(front, f"https://{HOST}:{port}/echo", "-w", "%{http_code}")

    assert status == 0, stderr
    assert stdout.endswith(b"502")
    assert b"could not connect to api.example.test" in stdout


async def test_a_client_that_does_not_trust_the_bundle_sees_the_interception_and_sends_nothing(
    start_upstream: StartUpstream, start_front: StartFront
) -> None:
    upstream = await start_upstream()
    front = await start_front()

    status, _, stderr = await curl(front, f"https://{HOST}:{upstream.port}/echo", trust_bundle=False)

    assert status == 60, stderr  # curl: the peer's certificate could not be verified
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"GET /echo HTTP/1.1\r\nHost: {host}\r\nBad Header: x\r\n\r\n", b"is not a header field"),
        (b"GET /echo HTTP/1.1\r\nHost: {host}\r\n folded: x\r\n\r\n", b"folded header lines"),
        (b"GET /echo HTTP/1.1\nHost: {host}\r\n\r\n", b"bare CR, LF"),
        (b"GET http://elsewhere/ HTTP/1.1\r\nHost: {host}\r\n\r\n", b"must be a path"),
        (b"GET /echo HTTP/2.0\r\nHost: {host}\r\n\r\n", b"is not HTTP/1.1"),
        (b"GET /echo HTTP/1.1\r\n\r\n", b"exactly one Host header"),
        (b"GET /echo HTTP/1.1\r\nHost: other.example.test\r\n\r\n", b"must carry Host: api.example.test:"),
        (
            b"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"both Transfer-Encoding and Content-Length",
        ),
        (b"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3, 4\r\n\r\n", b"one decimal number"),
        (b"POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip\r\n\r\n", b"only Transfer-Encoding"),
    ],
)
async def test_a_request_head_two_servers_could_read_differently_is_a_400_and_never_forwarded(
    start_upstream: StartUpstream, start_front: StartFront, head: bytes, why: bytes
) -> None:
    upstream = await start_upstream()
    front = await start_front()
    reader, writer = await open_tunnel(front, upstream.port)

    writer.write(head.replace(b"{host}", f"{HOST}:{upstream.port}".encode()))
    status, headers, body = await read_response(reader)

    assert status == 400
    assert why in body
    assert headers["connection"] == "close"
    assert await reader.read() == b""
    assert upstream.requests == []
    writer.close()


async def test_a_bad_request_after_a_good_one_ends_the_connection_after_the_good_answer(
    start_upstream: StartUpstream, start_front: StartFront
) -> None:
    upstream = await start_upstream()
    front = await start_front()
    reader, writer = await open_tunnel(front, upstream.port)

    writer.write(f"GET /echo HTTP/1.1\r\nHost: {HOST}:{upstream.port}\r\n\r\n".encode())
    first = await read_response(reader)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n")
    second = await read_response(reader)

    assert (first[0], second[0]) == (200, 400)
    assert len(upstream.requests) == 1
    writer.close()


async def test_the_run_running_out_of_bytes_closes_both_sides_and_tells_the_proxy(
    start_upstream: StartUpstream, start_front: StartFront
) -> None:
    upstream = await start_upstream()
    front = await start_front(limit=2 * MB)

    status, _, _ = await curl(front, f"https://{HOST}:{upstream.port}/bytes/{10 * MB}", "-o", "/dev/null")

    assert status != 0  # the download was cut
    assert [type(error) for error in front.errors] == [LimitReached]
    (meter,) = front.meters
    assert meter.down <= 2 * MB + 64 * 1024


async def test_an_invalid_secret_header_is_a_502_naming_it_without_its_value(
    start_upstream: StartUpstream, start_front: StartFront
) -> None:
    upstream = await start_upstream()
    front = await start_front(headers={"X-Api-Key": "line\r\nInjected: yes"})

    status, stdout, stderr = await curl(front, f"https://{HOST}:{upstream.port}/echo", "-w", "%{http_code}")

    assert status == 0, stderr
    assert stdout.endswith(b"502") and b"'X-Api-Key'" in stdout
    assert b"line" not in stdout and b"Injected" not in stdout
    assert upstream.requests == []


async def test_a_secret_header_that_would_reframe_the_request_is_refused(
    start_upstream: StartUpstream, start_front: StartFront
) -> None:
    upstream = await start_upstream()
    front = await start_front(headers={"Content-Length": "0"})

    status, stdout, stderr = await curl(
        front, f"https://{HOST}:{upstream.port}/echo", "--data-binary", "GET /smuggled HTTP/1.1", "-w", "%{http_code}"
    )

    assert status == 0, stderr
    assert stdout.endswith(b"502") and b"frames or routes the request" in stdout
    assert upstream.requests == []


async def test_the_secret_never_reaches_the_logs(
    start_upstream: StartUpstream, start_front: StartFront, caplog: pytest.LogCaptureFixture
) -> None:
    good = await start_upstream()
    untrusted = await start_upstream(ca=CertificateAuthority(*tls._new_ca()))
    front = await start_front()
    caplog.set_level(logging.DEBUG)

    await curl(front, f"https://{HOST}:{good.port}/echo")
    await curl(front, f"https://{HOST}:{untrusted.port}/echo")
    reader, writer = await open_tunnel(front, good.port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: elsewhere\r\n\r\n")
    await read_response(reader)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()

    assert caplog.records  # the failures were logged ...
    assert "s3cret" not in caplog.text  # ... without the secret


# --- Beyond plain requests ------------------------------------------------------------------------------------


async def test_after_an_upgrade_the_tunnel_carries_the_new_protocol_untouched(
    upstream_ca: CertificateAuthority, start_front: StartFront, tmp_path: Path
) -> None:
    heads: list[bytes] = []

    async def switch_and_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(
        switch_and_echo, "127.0.0.1", 0, ssl=server_context(upstream_ca, HOST, tmp_path)
    )
    port = server.sockets[0].getsockname()[1]
    front = await start_front()
    reader, writer = await open_tunnel(front, port)

    async with server:
        writer.write(
            f"GET /socket HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".encode()
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        frames = b"\x81\x05hello not HTTP at all\r\n\r\n"
        writer.write(frames)
        echoed = await asyncio.wait_for(reader.readexactly(len(frames)), 5)
        writer.close()

    assert echoed == frames
    assert f"Authorization: {SECRET}".encode() in heads[0]


async def test_the_proxys_unix_socket_carries_the_interception_too(
    start_upstream: StartUpstream, upstream_ca: CertificateAuthority, tmp_path: Path
) -> None:
    """The egress proxy listens on a Unix socket (bridged into the sandbox), where TLS is started all the same."""
    upstream = await start_upstream()
    front = Front({"Authorization": SECRET})
    path = tmp_path / "egress.sock"
    server = await asyncio.start_unix_server(front.serve, str(path), limit=64 * 1024)

    async with server:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(f"CONNECT {HOST}:{upstream.port} HTTP/1.1\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        await writer.start_tls(ssl.create_default_context(cafile=str(sandbox_ca_bundle())), server_hostname=HOST)
        writer.write(f"GET /echo HTTP/1.1\r\nHost: {HOST}:{upstream.port}\r\n\r\n".encode())
        status, _, body = await read_response(reader)
        writer.close()

    assert status == 200
    assert header_values(json.loads(body), "Authorization") == [SECRET]


# --- Through the egress proxy itself ----------------------------------------------------------------------------


@pytest_asyncio.fixture
async def egress_proxy(settings: Settings, upstream_ca: CertificateAuthority) -> AsyncIterator[Callable[..., Any]]:
    """The run's real egress proxy, allowing HOST (which 'resolves' to loopback, allowed for the test only)."""
    from gateway.allowlist import EgressPolicy, parse_rules
    from gateway.proxy import EgressProxy

    settings.EGRESS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    opened: list[EgressProxy] = []

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def open_proxy(max_bytes: int | None = None) -> tuple[EgressProxy, list[dict[str, Any]]]:
        if max_bytes is not None:
            settings.EGRESS_MAX_BYTES = max_bytes
        policy = EgressPolicy(tenant=parse_rules([f"{HOST}:*"]), headers={HOST: {"Authorization": SECRET}})
        heard: list[dict[str, Any]] = []
        proxy = EgressProxy(policy, on_egress=heard.append, resolver=resolve)
        await proxy.__aenter__()
        opened.append(proxy)
        return proxy, heard

    yield open_proxy
    for proxy in opened:
        await proxy.__aexit__(None, None, None)


async def test_through_the_egress_proxy_the_header_is_added_and_the_connection_reported(
    start_upstream: StartUpstream, egress_proxy: Callable[..., Any]
) -> None:
    upstream = await start_upstream()
    proxy, heard = await egress_proxy()
    front = Front({}, port=int(proxy.url.rsplit(":", 1)[1]))

    status, stdout, stderr = await curl(
        front, f"https://{HOST}:{upstream.port}/echo", f"https://{HOST}:{upstream.port}/echo", "-H", "Authorization: x"
    )
    await asyncio.sleep(0.1)  # the proxy reports the connection as it closes

    assert status == 0, stderr
    assert [header_values(seen, "Authorization") for seen in upstream.requests] == [[SECRET], [SECRET]]
    (event,) = heard
    assert event["allowed"] is True and event["credentials"] == ["Authorization"]
    assert event["bytes_down"] > len(stdout) and event["bytes_up"] > 0  # the plain text, heads included
    assert SECRET not in json.dumps(event)


async def test_through_the_egress_proxy_the_runs_byte_limit_ends_an_intercepted_download(
    start_upstream: StartUpstream, egress_proxy: Callable[..., Any]
) -> None:
    upstream = await start_upstream()
    proxy, heard = await egress_proxy(max_bytes=MB)
    front = Front({}, port=int(proxy.url.rsplit(":", 1)[1]))

    status, _, _ = await curl(front, f"https://{HOST}:{upstream.port}/bytes/{10 * MB}", "-o", "/dev/null")
    await asyncio.sleep(0.1)

    assert status != 0
    (event,) = heard
    assert "EGRESS_MAX_BYTES" in event["reason"]
    assert event["bytes_down"] <= MB + 64 * 1024
