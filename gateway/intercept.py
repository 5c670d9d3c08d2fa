"""A CONNECT tunnel opened up so that a tenant's secret headers ride on the agent's HTTPS requests.

The egress proxy calls `intercept` for a host the tenant gives secret headers, after it has allowed the
host, checked the address it will dial, and answered `200 Connection established`. Then:

1. the sandbox's TLS is answered here with a certificate for the host from the deployment CA
   (`gateway.tls`), while a TLS connection to the checked address is opened beside it, verified against
   the real host's name as any client would;
2. requests are read one by one (keep-alive): each head is checked (one Host, naming the tunnel's host;
   one framing), any header the client sent under a secret header's name is dropped, the tenant's headers
   are added, and the body is streamed through by its own framing (Content-Length or chunked), never held
   whole;
3. responses flow back untouched, as bytes: nothing in them is parsed, so 1xx, HEAD and streaming answers
   need no care here. A request asking for an Upgrade (WebSocket) switches the tunnel to plain bytes after
   its head, as every later request then carries nothing of the tenant's.

Only HTTP/1.1 is offered (ALPN) on both sides: the proxy reads requests, so h2 is never agreed. The values
of the headers are never logged; the names may be.
"""

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.tls import intercepting_context, normalized_host, upstream_context

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
HANDSHAKE_SECONDS = 10.0
HEAD_SECONDS = 30.0
# Headers meant for the proxy, never for the server (a client may send them inside the tunnel too).
PROXY_HEADERS = frozenset({"proxy-authorization", "proxy-connection"})
# Headers that frame or route the request: a secret header of one of these names would let the request the server
# reads differ from the one checked here.
FRAMING_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "expect", "keep-alive"}
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Traffic(Protocol):
    """The proxy's meter for one connection (gateway.proxy.ConnectionTraffic); either call may raise to end it
    (EgressLimitReached), and that exception leaves `intercept` after both sides are closed."""

    def sent(self, count: int) -> None: ...

    def received(self, count: int) -> None: ...


class BadRequest(Exception):
    """A request head or body framing the proxy will not forward; the message tells the client what to fix."""


class UpstreamFailed(Exception):
    def __init__(self, status: int, reason: str, explanation: str) -> None:
        super().__init__(explanation)
        self.status = status
        self.reason = reason


@dataclass
class RequestHead:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [value for header, value in self.headers if header.lower() == name]


async def intercept(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    *,
    host: str,
    port: int,
    address: str,
    headers: Mapping[str, str],
    traffic: Traffic,
    connect_timeout: float,
) -> None:
    """Serve one CONNECT tunnel to `host:port` as its HTTPS server, forwarding each request to `address` (already
    checked: dialed as is, never resolved again) with `headers` in place of any the client sent under their names.

    Call right after answering `200 Connection established`. Returns when either side closes; both are closed."""
    host = normalized_host(host)
    upstream = asyncio.create_task(open_upstream(host, port, address, connect_timeout))
    upstream_writer: asyncio.StreamWriter | None = None
    try:
        try:
            await client_writer.start_tls(intercepting_context(host), ssl_handshake_timeout=HANDSHAKE_SECONDS)
        except (OSError, TimeoutError) as error:
            # Most often a client that does not trust the deployment CA (its bundle is not in use).
            logger.info("Egress interception of %s:%s: the client's TLS handshake failed (%s)", host, port, error)
            return
        try:
            upstream_reader, upstream_writer = await upstream
        except UpstreamFailed as failure:
            logger.info("Egress interception of %s:%s: %s", host, port, failure)
            await answer_without_upstream(client_reader, client_writer, failure.status, failure.reason, str(failure))
            return
        problem = secret_header_problem(headers)
        if problem:
            logger.warning("Egress interception of %s:%s: %s", host, port, problem)
            await answer_without_upstream(client_reader, client_writer, 502, "Bad secret header", problem)
            return
        await relay(client_reader, client_writer, upstream_reader, upstream_writer, host, port, headers, traffic)
    finally:
        if not upstream.done():
            upstream.cancel()
            await asyncio.gather(upstream, return_exceptions=True)
            if not upstream.cancelled() and upstream.exception() is None:
                upstream_writer = upstream.result()[1]
        if upstream_writer is not None:
            await _close_quietly(upstream_writer)
        await _close_quietly(client_writer)


async def open_upstream(
    host: str, port: int, address: str, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TLS to `address`, verified for `host` with the system's roots and EGRESS_UPSTREAM_CA_FILE; UpstreamFailed
    says why not in words the model can act on."""
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(
                address,
                port,
                ssl=upstream_context(),
                server_hostname=host,
                ssl_handshake_timeout=timeout,
                limit=CHUNK,
            ),
            timeout,
        )
    except ssl.SSLCertVerificationError as error:
        raise UpstreamFailed(
            502,
            "Upstream certificate not trusted",
            f"Egress failed: the certificate of {host}:{port} was not trusted ({error.verify_message}), so the "
            "proxy did not send it the request or the tenant's secret headers. An operator can trust the "
            "server's CA with EGRESS_UPSTREAM_CA_FILE.",
        ) from None
    except ssl.SSLError as error:
        raise UpstreamFailed(
            502, "Upstream TLS failed", f"Egress failed: TLS with {host}:{port} failed ({error.reason or error})."
        ) from None
    except TimeoutError:
        raise UpstreamFailed(
            504, "Upstream did not answer", f"Egress failed: {host}:{port} did not answer within {timeout:g} s."
        ) from None
    except OSError as error:
        raise UpstreamFailed(
            502,
            "Upstream unreachable",
            f"Egress failed: could not connect to {host}:{port} ({error.strerror or error}).",
        ) from None


async def answer_without_upstream(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, status: int, reason: str, body: str
) -> None:
    """Answer the client's first request with `status` and close: it has already been told the tunnel is open.
    Its head is read first, so the answer is read as one, not lost to a reset."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client_reader.readuntil(b"\r\n\r\n"), HEAD_SECONDS)
    with contextlib.suppress(Exception):
        client_writer.write(response(status, reason, body))
        await client_writer.drain()
    await _close_quietly(client_writer)


async def relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
    host: str,
    port: int,
    headers: Mapping[str, str],
    traffic: Traffic,
) -> None:
    """Requests up with the headers added, responses down as bytes, until either side ends."""
    requests = asyncio.create_task(forward_requests(client_reader, upstream_writer, host, port, headers, traffic.sent))
    responses = asyncio.create_task(copy_bytes(upstream_reader, client_writer, traffic.received))
    try:
        done, _ = await asyncio.wait({requests, responses}, return_when=asyncio.FIRST_COMPLETED)
        # Whichever side ended first, the connection is over: a TLS peer that closes cannot still read.
        responses.cancel()
        requests.cancel()
        await asyncio.gather(requests, responses, return_exceptions=True)
        for task in done:
            error = task.exception()
            if isinstance(error, BadRequest):
                logger.info("Egress interception of %s:%s: bad request (%s)", host, port, error)
                with contextlib.suppress(Exception):
                    client_writer.write(response(400, "Bad request", f"Egress proxy: {error}"))
                    await client_writer.drain()
            elif error is not None and not _is_disconnect(error):
                raise error
    finally:
        for task in (requests, responses):
            task.cancel()


async def forward_requests(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    headers: Mapping[str, str],
    count: Callable[[int], None],
) -> None:
    """Each request the client sends, its head rewritten and its body streamed; returns at the client's end."""
    added = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")
    replaced = {name.lower() for name in headers} | PROXY_HEADERS

    async def send(data: bytes) -> None:
        count(len(data))
        writer.write(data)
        await writer.drain()

    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            if error.partial.strip():
                raise BadRequest("the request head ended before its blank line") from None
            return
        except asyncio.LimitOverrunError:
            raise BadRequest("the request head is longer than the proxy reads (64 KiB)") from None
        head = head.lstrip(b"\r\n")  # RFC 9112 2.2: a stray empty line before a request is ignored
        if not head:
            continue
        request = parse_request_head(head)
        check_host(request, host, port)
        length, chunked = body_framing(request)
        kept = [f"{name}: {value}\r\n" for name, value in request.headers if name.lower() not in replaced]
        await send(
            f"{request.method} {request.target} {request.version}\r\n{''.join(kept)}".encode("latin-1")
            + added
            + b"\r\n"
        )
        if chunked:
            await forward_chunked_body(reader, send, replaced)
        elif length:
            await forward_exactly(reader, send, length)
        if request.values("upgrade"):
            # What follows is another protocol (WebSocket): plain bytes from here, nothing more is added.
            await copy_bytes(reader, writer, count)
            return


def secret_header_problem(headers: Mapping[str, str]) -> str:
    """Why the tenant's headers cannot be sent (a configuration error, named without the value), or ''."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            return f"Egress failed: the tenant's secret header {name!r} for this host is not a valid HTTP header."
        if name.lower() in FRAMING_HEADERS:
            return f"Egress failed: {name!r} cannot be a secret header (it frames or routes the request)."
    return ""


def parse_request_head(head: bytes) -> RequestHead:
    """The request line and header fields of `head` (ending in CRLF CRLF), refused on anything two servers might
    read differently: bare CR or LF, folded lines, spaces before a colon, controls in values."""
    text = head.decode("latin-1")
    lines = text[:-4].split("\r\n")
    if any("\r" in line or "\n" in line or "\x00" in line for line in lines):
        raise BadRequest("lines must end in CRLF, with no bare CR, LF or NUL")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise BadRequest("the request line must read METHOD /path HTTP/1.1")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(f"{version[:20]!r} is not HTTP/1.1 or HTTP/1.0")
    if method == "CONNECT":
        raise BadRequest("CONNECT inside a tunnel is not supported")
    if not (target.startswith("/") or (target == "*" and method == "OPTIONS")) or not target.isprintable():
        raise BadRequest("inside the tunnel the request target must be a path (origin-form, /like/this)")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            raise BadRequest("folded header lines are not accepted")
        name, colon, value = line.partition(":")
        value = value.strip(" \t")
        if not colon or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise BadRequest(f"{line[:60]!r} is not a header field")
        headers.append((name, value))
    return RequestHead(method, target, version, headers)


def check_host(request: RequestHead, host: str, port: int) -> None:
    """The request must name the tunnel's host: the tenant's headers are for it, and a server behind one address
    that serves several names must not be asked, with them, for another."""
    hosts = request.values("host")
    if not hosts and request.version == "HTTP/1.0":
        request.headers.append(("Host", _authority(host, port)))
        return
    if len(hosts) != 1:
        raise BadRequest("a request must carry exactly one Host header")
    named = hosts[0].lower()
    if named.startswith("["):
        named_host, _, rest = named[1:].partition("]")
        named_port = rest.removeprefix(":")
    else:
        named_host, _, named_port = named.partition(":")
    if normalized_host(named_host) != host or (named_port or "443") != str(port):
        raise BadRequest(
            f"this tunnel was opened to {host}:{port}: its requests must carry Host: {_authority(host, port)}"
        )


def _authority(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == 443 else f"{shown}:{port}"


def body_framing(request: RequestHead) -> tuple[int, bool]:
    """(Content-Length, chunked) of the request's body, refusing any framing two servers might read differently."""
    codings = [part.strip().lower() for value in request.values("transfer-encoding") for part in value.split(",")]
    lengths = {part.strip() for value in request.values("content-length") for part in value.split(",")}
    if codings:
        if request.version == "HTTP/1.0":
            raise BadRequest("Transfer-Encoding is not allowed in HTTP/1.0")
        if codings != ["chunked"]:
            raise BadRequest("the only Transfer-Encoding accepted is chunked")
        if lengths:
            raise BadRequest("a request may not carry both Transfer-Encoding and Content-Length")
        return 0, True
    if not lengths:
        return 0, False
    if len(lengths) != 1 or not next(iter(lengths)).isdigit() or len(next(iter(lengths))) > 18:
        raise BadRequest("Content-Length must be one decimal number")
    return int(lengths.pop()), False


async def forward_exactly(reader: asyncio.StreamReader, send: Callable[[bytes], Awaitable[None]], length: int) -> None:
    remaining = length
    while remaining:
        data = await reader.read(min(CHUNK, remaining))
        if not data:
            raise ConnectionResetError("the client closed its connection inside a request body")
        remaining -= len(data)
        await send(data)


async def forward_chunked_body(
    reader: asyncio.StreamReader, send: Callable[[bytes], Awaitable[None]], replaced: set[str]
) -> None:
    """Chunks as they come (their size lines as sent), then the trailer, less any field named like a secret one."""
    while True:
        line = await _read_line(reader)
        size_text = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise BadRequest("a chunk's size line must be hexadecimal")
        size = int(size_text, 16)
        await send(line)
        if size == 0:
            break
        await forward_exactly(reader, send, size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("a chunk must end in CRLF")
        await send(b"\r\n")
    while (line := await _read_line(reader)) != b"\r\n":
        name = line.split(b":", 1)[0].decode("latin-1").strip().lower()
        if name not in replaced:
            await send(line)
    await send(b"\r\n")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest("a chunk size or trailer line is too long") from None
    if b"\n" in line[:-2] or b"\r" in line[:-2]:
        raise BadRequest("lines must end in CRLF, with no bare CR or LF")
    return line


async def copy_bytes(source: asyncio.StreamReader, target: asyncio.StreamWriter, count: Callable[[int], None]) -> None:
    while data := await source.read(CHUNK):
        count(len(data))
        target.write(data)
        await target.drain()


def response(status: int, reason: str, body: str) -> bytes:
    payload = body.encode() + b"\n"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1") + payload


def _is_disconnect(error: BaseException) -> bool:
    return isinstance(error, ConnectionError | asyncio.IncompleteReadError | ssl.SSLError | OSError | TimeoutError)


async def _close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
