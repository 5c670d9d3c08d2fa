"""The sandbox's way to the network: one HTTP proxy per run, in the worker, beside the model gateway.

The sandbox has no network of its own (no interface but `lo`, no DNS); its tools reach the web only through
this proxy, which the sandbox bridges to 127.0.0.1:8766 and names in HTTP_PROXY / HTTPS_PROXY. A tool that
ignores those variables finds no route at all. For each connection the proxy:

1. reads one request head: `CONNECT host:port` (HTTPS and any TCP) or an absolute `http://` URL;
2. decides before any packet leaves: the run's limits, the operator's deny list, then the name resolved
   here (EGRESS_DNS_SERVERS or the system's resolver), every address checked by the outbound guard
   (`gateway.egress`: no loopback, private, link-local or metadata address unless the operator allows its
   range), then the run's allow-lists (`gateway.allowlist.EgressPolicy`);
3. dials exactly a checked address (never the name again: a rebinding answer cannot slip in between), and
   relays: a tunnel untouched, or, for hosts the tenant gives secret headers, through `gateway.intercept`,
   which adds them on the way out so the agent uses a key it never holds;
4. refuses with a 403 whose status line and body say which host, why, and who can allow it (curl shows
   the body of a refused http:// request; urllib and `curl -v` show the status line of a refused CONNECT);
5. reports every connection as an `egress` event: host, port, allowed or refused and why, bytes each way,
   duration.
"""

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from django.conf import settings

from gateway.allowlist import EgressPolicy
from gateway.egress import EgressRefused, IPAddress, resolve_allowed
from gateway.intercept import intercept

logger = logging.getLogger(__name__)

HEAD_LIMIT = 64 * 1024
HEAD_SECONDS = 30.0
CHUNK = 64 * 1024
# Removed from a forwarded request: they speak to the proxy, not to the server.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "upgrade"}
)
WHO_CAN_ALLOW = (
    "The agent's sandbox reaches the network only through this proxy; an operator or the tenant can allow "
    "the host in the tenant's or the agent profile's egress allow-list."
)


class EgressLimitReached(Exception):
    """The run has moved all the bytes it may (EGRESS_MAX_BYTES)."""


class BadRequest(Exception):
    """A request head the proxy cannot act on; the message says what it expected."""


@dataclass
class RunTraffic:
    """What a run's connections have moved in all, against its limits."""

    max_bytes: int
    max_connections: int
    connections: int = 0
    refused: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def summary(self) -> dict[str, int]:
        return {
            "connections": self.connections,
            "refused": self.refused,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }


@dataclass
class ConnectionTraffic:
    """One connection's bytes, counted into its run's; raises EgressLimitReached past the run's limit."""

    run: RunTraffic
    up: int = 0
    down: int = 0

    def sent(self, count: int) -> None:
        self.up += count
        self.run.bytes_up += count
        self._check()

    def received(self, count: int) -> None:
        self.down += count
        self.run.bytes_down += count
        self._check()

    def _check(self) -> None:
        if self.run.bytes_up + self.run.bytes_down > self.run.max_bytes:
            raise EgressLimitReached(
                f"this run has moved its {self.run.max_bytes} bytes through the network (EGRESS_MAX_BYTES)"
            )


@dataclass
class Request:
    """A request head as the client sent it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)


def parse_head(head: bytes) -> Request:
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest("the request line must read METHOD TARGET HTTP/1.1") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest(f"{version!r} is not HTTP/1.x")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(f"{line[:80]!r} is not a header")
        headers.append((name, value.strip()))
    return Request(method.upper(), target, version, headers)


def split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """`host` and port of `host:port` or `[v6]:port`; BadRequest when either is missing or wrong."""
    host, port = authority, ""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest.removeprefix(":")
    elif authority.count(":") == 1:
        host, port = authority.split(":")
    if not port and default_port is not None:
        return host.lower().removesuffix("."), default_port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"{authority!r} must read host:port")
    return host.lower().removesuffix("."), int(port)


def reply(status: int, reason: str, body: str = "") -> bytes:
    """A whole response for the client; the reason phrase carries the why for clients that show only it."""
    phrase = " ".join(reason.split())[:300]
    payload = (body or phrase).encode() + b"\n"
    return (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1", "replace") + payload


async def resolve_with_settings(host: str, port: int) -> list[str]:
    """The addresses of `host`, from the operator's resolvers (EGRESS_DNS_SERVERS) or the system's."""
    servers = list(settings.EGRESS_DNS_SERVERS)
    if not servers:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in infos]
    import dns.asyncresolver
    import dns.exception
    import dns.nameserver
    import dns.resolver

    resolver = dns.asyncresolver.Resolver(configure=False)
    nameservers: list[str | dns.nameserver.Nameserver] = []
    for server in servers:
        address, port_text = split_authority(server, 53)
        nameservers.append(dns.nameserver.Do53Nameserver(address, port_text))
    resolver.nameservers = nameservers
    resolver.lifetime = 5.0
    resolver.cache = None  # every connection resolves afresh, as the guard expects
    addresses: list[str] = []
    for record_type in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, record_type)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as error:
            raise OSError(errno.EHOSTUNREACH, f"{host} could not be resolved ({error})") from None
        addresses.extend(record.to_text() for record in answer)
    return addresses


@dataclass
class Decision:
    host: str
    port: int
    addresses: list[str] = field(default_factory=list)
    refusal: str | None = None


class EgressProxy:
    """Serves one run's egress for as long as the `async with` block lasts; open connections end with it.

    `on_egress` hears one dict per connection (the `egress` event's data)."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        on_egress: Callable[[dict[str, Any]], None],
        socket_path: Path | None = None,
        owner: tuple[int, int] | None = None,
        resolver: Callable[[str, int], Any] | None = None,
    ) -> None:
        self.policy = policy
        self.on_egress = on_egress
        self.socket_path = socket_path
        self.owner = owner
        self.resolver = resolver or resolve_with_settings
        self.traffic = RunTraffic(settings.EGRESS_MAX_BYTES, settings.EGRESS_MAX_CONNECTIONS)
        self.between_runs = False  # a warm session's sandbox between its runs: nothing goes out
        self.url = ""
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        if self.socket_path is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=HEAD_LIMIT)
            self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        else:
            self._server = await asyncio.start_unix_server(self._serve, str(self.socket_path), limit=HEAD_LIMIT)
            if self.owner and os.geteuid() == 0:
                os.chown(self.socket_path, *self.owner)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    def serve(self, on_egress: Callable[[dict[str, Any]], None]) -> None:
        """Serve the next run of a warm session's sandbox: its connections are that run's, counted from zero."""
        self.on_egress = on_egress
        self.traffic = RunTraffic(settings.EGRESS_MAX_BYTES, settings.EGRESS_MAX_CONNECTIONS)
        self.between_runs = False

    def pause(self) -> None:
        """Refuse every connection until `serve` (the sandbox's run ended; a warm session waits for its next)."""
        self.between_runs = True

    def summary(self) -> dict[str, Any]:
        """What run.started says of the run's egress: enforced or not, and its policy (no secret value)."""
        mode = "proxy" if self.socket_path is not None else "unenforced"
        return {"mode": mode, **self.policy.summary()}

    def environment(self, url: str) -> dict[str, str]:
        """The variables that send the CLI's and every tool's web traffic here (`url` as the sandbox reaches it);
        the run's model gateway, on loopback too, is reached directly."""
        no_proxy = "127.0.0.1,localhost,::1"
        return {
            "HTTP_PROXY": url,
            "HTTPS_PROXY": url,
            "http_proxy": url,
            "https_proxy": url,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        started = time.monotonic()
        record: dict[str, Any] | None = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_SECONDS)
                request = parse_head(head)
                connect = request.method == "CONNECT"
                host, port = self._destination(request)
            except BadRequest as error:
                writer.write(reply(400, "Bad request to the egress proxy", f"Egress proxy: {error}."))
                return
            except asyncio.LimitOverrunError:
                writer.write(reply(400, f"Egress proxy: the request head is larger than {HEAD_LIMIT // 1024} KiB"))
                return
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            record = {"host": host, "port": port, "method": request.method, "allowed": False, "reason": None}
            decision = Decision(host, port, refusal=None if connect else self.refusal_in_clear(host))
            if self.between_runs:
                decision.refusal = "the agent's run has ended"
            if decision.refusal is None:
                decision = await self._decide(host, port)
            if decision.refusal is not None:
                self.traffic.refused += 1
                record["reason"] = decision.refusal
                writer.write(
                    reply(
                        403,
                        f"Egress refused: {decision.refusal}",
                        f"Egress refused: the sandbox may not connect to {host}:{port}: {decision.refusal}. "
                        + WHO_CAN_ALLOW,
                    )
                )
                return
            try:
                upstream_reader, upstream_writer, address = await self._dial(decision)
            except OSError as error:
                record["reason"] = f"could not connect: {error.strerror or error}"
                writer.write(
                    reply(502, f"Egress failed: {host}:{port} did not answer", f"Egress failed: {record['reason']}.")
                )
                return
            record.update(allowed=True, address=address)
            self.traffic.connections += 1
            meter = ConnectionTraffic(self.traffic)
            headers = self.policy.headers_for(host)
            try:
                if connect:
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    if headers:
                        record["credentials"] = sorted(headers)
                        await self._intercept(reader, writer, decision, address, headers, meter, upstream_writer)
                    else:
                        await relay(reader, writer, upstream_reader, upstream_writer, meter)
                else:
                    upstream_writer.write(forwarded_head(request))
                    meter.sent(len(head))
                    await relay(reader, writer, upstream_reader, upstream_writer, meter)
            except EgressLimitReached as error:
                record["reason"] = str(error)
            finally:
                record.update(bytes_up=meter.up, bytes_down=meter.down)
                upstream_writer.close()
        except asyncio.CancelledError:
            pass  # the run ended with the connection open: it ends here (asyncio logs a cancelled client task)
        except Exception:
            logger.exception("Egress proxy: a connection failed")
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()
            # Past the run's limit, refusals are counted (run.completed) but only the first is an event: a tool
            # retrying in a loop must not flood the conversation's log.
            if (
                record is not None
                and self.traffic.connections + self.traffic.refused <= self.traffic.max_connections + 1
            ):
                record["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
                record.setdefault("bytes_up", 0)
                record.setdefault("bytes_down", 0)
                self.on_egress(record)

    def _destination(self, request: Request) -> tuple[str, int]:
        if request.method == "CONNECT":
            return split_authority(request.target, None)
        url = urlsplit(request.target)
        if url.scheme != "http" or not url.netloc:
            raise BadRequest(
                f"{request.target[:200]!r} is not an absolute http:// URL (send https:// through CONNECT: "
                "set HTTPS_PROXY)"
            )
        return split_authority(url.netloc.rpartition("@")[2], 80)

    async def _decide(self, host: str, port: int) -> Decision:
        decision = Decision(host, port)
        traffic = self.traffic
        if traffic.connections + traffic.refused >= traffic.max_connections:
            decision.refusal = f"this run has tried its {traffic.max_connections} connections (EGRESS_MAX_CONNECTIONS)"
            return decision
        if traffic.bytes_up + traffic.bytes_down >= traffic.max_bytes:
            decision.refusal = f"this run has moved its {traffic.max_bytes} bytes (EGRESS_MAX_BYTES)"
            return decision
        if self.policy.closed:
            decision.refusal = "this run may not reach the network (its egress allow-list is empty)"
            return decision
        decision.refusal = self.policy.refusal_for_name(host, port)
        if decision.refusal:
            return decision
        try:
            decision.addresses = await resolve_allowed(host, port, resolver=self.resolver)
        except EgressRefused as error:
            decision.refusal = str(error)
            return decision
        except OSError as error:
            decision.refusal = f"{host} could not be resolved ({error.strerror or error})"
            return decision
        addresses: list[IPAddress] = [ipaddress.ip_address(address) for address in decision.addresses]
        decision.refusal = self.policy.refusal(host, port, addresses)
        return decision

    def refusal_in_clear(self, host: str) -> str | None:
        """Why a plain http:// request to `host` is refused: the tenant's secret headers go only over TLS."""
        if self.policy.headers_for(host):
            return f"{host} gets the tenant's credentials only over HTTPS: request https://{host}/ instead"
        return None

    async def _dial(self, decision: Decision) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        error: OSError = OSError(errno.EHOSTUNREACH, "no address")
        for address in decision.addresses:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(address, decision.port, limit=CHUNK), settings.EGRESS_CONNECT_SECONDS
                )
                return reader, writer, address
            except TimeoutError:
                error = OSError(errno.ETIMEDOUT, f"{address} did not answer in {settings.EGRESS_CONNECT_SECONDS:g} s")
            except OSError as failure:
                error = failure
        raise error

    async def _intercept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decision: Decision,
        address: str,
        headers: Mapping[str, str],
        meter: ConnectionTraffic,
        dialed: asyncio.StreamWriter,
    ) -> None:
        # The interception opens its own TLS connection to the checked address.
        dialed.close()
        await intercept(
            reader,
            writer,
            host=decision.host,
            port=decision.port,
            address=address,
            headers=headers,
            traffic=meter,
            connect_timeout=settings.EGRESS_CONNECT_SECONDS,
        )


def forwarded_head(request: Request) -> bytes:
    """The head of a plain http:// request as the server gets it: origin-form, no proxy headers, one request per
    connection, and the Host the URL names (the one the allow-list checked: another Host would reach another
    site behind the same address)."""
    url = urlsplit(request.target)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    lines = [f"{request.method} {path} HTTP/1.1", f"Host: {url.netloc.rpartition('@')[2]}"]
    lines += [
        f"{name}: {value}"
        for name, value in request.headers
        if name.lower() not in HOP_BY_HOP and name.lower() != "host"
    ]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
    meter: ConnectionTraffic,
) -> None:
    """Copy both ways until the server's side ends (or either side fails); bytes are counted as they pass."""
    up = asyncio.create_task(copy(reader, upstream_writer, meter.sent))
    down = asyncio.create_task(copy(upstream_reader, writer, meter.received))
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if up in done and up.exception() is None:
            await down  # the client has said all it will; the answer still comes
        for task in (up, down):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


async def copy(source: asyncio.StreamReader, target: asyncio.StreamWriter, count: Callable[[int], None]) -> None:
    try:
        while chunk := await source.read(CHUNK):
            count(len(chunk))
            target.write(chunk)
            await target.drain()
    except (ConnectionError, OSError):
        return
    if target.can_write_eof():
        with contextlib.suppress(OSError):
            target.write_eof()
