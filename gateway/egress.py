"""No door into the private network: where calls made for a tenant's MCP servers and OpenAPI tools may go.

A tenant names a URL; the platform calls it from inside our network. Without a check that URL could be
http://169.254.169.254/ (cloud credentials), http://10.0.0.5/ (an internal service) or a name whose DNS
answer points at either. So an outbound call may reach only public addresses, unless the operator
allows a network in EGRESS_ALLOWED_NETWORKS.

Two moments check it:

- Saving a server, `check_url` refuses bad URLs and IP literals in any spelling the C library reads as
  an address (`2130706433`, `0x7f.1`, `127.1`). It does not resolve names: DNS answers change, so a name
  is only meaningful at call time.
- Calling it, `guarded_connector()` gives an aiohttp connector that checks every connection it opens,
  redirects included:

  1. Names go through `GuardedResolver`, which resolves once, refuses if ANY record is refused (a
     rebinding name may answer a public and a private address), and hands aiohttp only the checked
     addresses; aiohttp dials those, never re-resolving, and the DNS cache is off so each connection
     resolves afresh.
  2. aiohttp 3.14 never asks the resolver about a host that looks like an IP (`TCPConnector._resolve_host`
     returns it as is, refusing only non-canonical IPv4 forms). `GuardedConnector` overrides
     `_resolve_host` so literals go through the same `GuardedResolver`, and are refused with the same
     words before any socket exists.
  3. As a last line that depends on no private aiohttp method, its `socket_factory` (public API, called by
     aiohappyeyeballs for every socket) refuses to open a socket towards a refused address. If a later
     aiohttp stops calling `_resolve_host`, this still holds; the caller then sees a ClientConnectorError
     carrying the reason instead of `EgressRefused`.

Callers pass `allow_redirects=False`: the connector keeps a redirect off private addresses, but only the
caller can keep it on the host its server names. Sessions must not use a proxy (nor `trust_env=True`): a
proxy resolves the target itself, so only the proxy's own address would be checked.
"""

import asyncio
import errno
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.tracing import Trace
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Resolves a name to IP address strings; the default asks the running loop's getaddrinfo.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_ONLY_PUBLIC = "calls made for tenants may only reach public addresses (an operator can allow a network with EGRESS_ALLOWED_NETWORKS)"

# Checked in order, so the first match names the most telling reason (169.254.169.254 is link-local too).
_IPV4_REFUSALS: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(network), reason)
    for network, reason in [
        ("169.254.169.254/32", "the link-local cloud metadata address"),
        ("0.0.0.0/8", "an unspecified address"),  # Linux connects 0.0.0.0 to this host
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("192.0.0.0/24", "a special-purpose address"),  # Python 3.11 still calls parts of it global
    ]
)
_IPV6_REFUSALS: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(network), reason)
    for network, reason in [
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("fe80::/10", "a link-local address"),
        ("fc00::/7", "a private address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
        ("::/8", "a reserved address"),  # IPv4-compatible ::a.b.c.d among others; mapped forms are unwrapped first
    ]
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# The characters of the legacy IPv4 spellings inet_aton accepts (0x7f.1, 017700000001, 2130706433).
_INET_ATON_SPELLING = re.compile(r"[0-9a-fA-FxX.]+")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


class EgressRefused(Exception):
    """A call may not go where it was headed; the message says why, in words fit for the agent and the operator."""


class InvalidServerUrl(ValueError):
    """A server URL that cannot be called at all (not http(s), no host, credentials in it)."""


def refusal_for(address: IPAddress) -> str | None:
    """Why calls may not reach `address` ("a private address", …), or None when they may."""
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    candidates = [address] if embedded is None else [address, embedded[1]]
    if any(candidate in network for network in _allowed_networks() for candidate in candidates):
        return None
    if embedded is not None:
        form, ipv4 = embedded
        reason = refusal_for(ipv4)
        return f"{form} of {ipv4}, {reason}" if reason else None
    refusals: Sequence[tuple[IPNetwork, str]] = _IPV4_REFUSALS if address.version == 4 else _IPV6_REFUSALS
    for network, reason in refusals:
        if address in network:
            return reason
    if not address.is_global:
        return "a special-purpose address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries to, and the form it is written in; connecting to
    ::ffff:10.0.0.1 reaches 10.0.0.1, and 6to4, Teredo and NAT64 forms may be routed there too."""
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped form", address.ipv4_mapped
    if address in _NAT64:
        return "a NAT64 form", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "a 6to4 form", address.sixtofour
    if address.teredo is not None:
        return "a Teredo form", address.teredo[1]
    return None


def _allowed_networks() -> tuple[IPNetwork, ...]:
    """The networks the operator lets calls reach anyway (settings.EGRESS_ALLOWED_NETWORKS), read at each use."""
    configured = getattr(settings, "EGRESS_ALLOWED_NETWORKS", [])
    if isinstance(configured, str):
        raise ImproperlyConfigured(
            "EGRESS_ALLOWED_NETWORKS must be a list of networks such as ['10.1.0.0/16'], not a string"
        )
    return _parse_networks(tuple(configured))


@functools.lru_cache(maxsize=8)
def _parse_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(str(cidr).strip()))
        except ValueError as error:
            raise ImproperlyConfigured(
                f"EGRESS_ALLOWED_NETWORKS holds {cidr!r}, which is not a network in CIDR form such as 10.1.0.0/16 or 127.0.0.2/32 ({error})"
            ) from error
    return tuple(networks)


def _literal_address(host: str) -> IPAddress | None:
    """The address `host` is by itself, in any spelling the C library would read as an address, or None for a name."""
    candidate = host.removesuffix(".")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    if _INET_ATON_SPELLING.fullmatch(candidate):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(candidate))
        except OSError:
            return None
    return None


def _refuse_unless_allowed(host: str, address: IPAddress) -> None:
    reason = refusal_for(address)
    if reason is None:
        return
    if _literal_address(host) is not None:
        named = f"{host} is {reason}" if host == str(address) else f"{host} means {address}, {reason}"
    else:
        named = f"{host} resolves to {address}, {reason}"
    raise EgressRefused(f"{named}; {_ONLY_PUBLIC}")


def check_url(url: str) -> None:
    """Refuse a server URL that could never be called safely; call when saving a server.

    Names are not resolved here (their answers change); `guarded_connector` checks them at call time."""
    try:
        parsed = URL(url)
    except ValueError as error:
        raise InvalidServerUrl(f"{url!r} is not a valid URL ({error})") from error
    if parsed.scheme not in ("http", "https"):
        raise InvalidServerUrl(f"{url!r} is not an http or https URL")
    if not parsed.raw_host:
        raise InvalidServerUrl(f"{url!r} names no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        # Credentials in a URL end up in logs and in the agent's context; they belong in the server's headers.
        raise InvalidServerUrl(
            f"{parsed.with_user(None)} must not carry a user name or password; put credentials in the server's headers"
        )
    host = parsed.raw_host
    address = _literal_address(host)
    if address is not None:
        _refuse_unless_allowed(host, address)
    elif not _HOSTNAME.fullmatch(host):
        raise InvalidServerUrl(f"{url!r} has a host that is neither a domain name nor an IP address")


async def resolve_allowed(host: str, port: int, *, resolver: Resolver | None = None) -> list[str]:
    """Resolve `host` and return its addresses, refusing if any one of them is refused.

    All records are checked, not the first: a rebinding name can answer a public and a private address
    and leave the client to pick. Connect only to the addresses returned, never to the name."""
    address = _literal_address(host)
    if address is not None:
        _refuse_unless_allowed(host, address)
        return [str(address)]
    answers = await (resolver or _resolve_with_getaddrinfo)(host, port)
    if not answers:
        raise OSError(errno.ENOENT, f"{host} resolves to no address")
    allowed: list[str] = []
    for answer in answers:
        try:
            resolved = ipaddress.ip_address(answer)
        except ValueError as error:
            raise EgressRefused(f"{host} resolves to {answer!r}, which is not an IP address; {_ONLY_PUBLIC}") from error
        _refuse_unless_allowed(host, resolved)
        if str(resolved) not in allowed:
            allowed.append(str(resolved))
    return allowed


async def _resolve_with_getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
    )
    return [str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in infos]


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that answers only addresses calls may reach, and raises EgressRefused otherwise."""

    def __init__(self, resolver: Resolver | None = None) -> None:
        self.resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in await resolve_allowed(host, port, resolver=self.resolver):
            address_family = socket.AF_INET if ipaddress.ip_address(address).version == 4 else socket.AF_INET6
            if family in (socket.AF_UNSPEC, address_family):
                results.append(
                    {
                        "hostname": host,
                        "host": address,
                        "port": port,
                        "family": address_family,
                        "proto": 0,
                        "flags": socket.AI_NUMERICHOST,
                    }
                )
        if not results:
            raise OSError(errno.ENOENT, f"{host} has no {family.name} address")
        return results

    async def close(self) -> None:
        pass


def guarded_socket(addr_info: AddrInfoType) -> socket.socket:
    """Open the socket aiohttp is about to connect, unless its destination is refused (the connector's last line)."""
    family, type_, proto, _name, sockaddr = addr_info
    try:
        reason = refusal_for(ipaddress.ip_address(sockaddr[0]))
    except ValueError:
        reason = "not an IP address"
    if reason is not None:
        # An OSError, so aiohappyeyeballs reports it among the attempts rather than losing it.
        raise PermissionError(errno.EACCES, f"{sockaddr[0]} is {reason}; {_ONLY_PUBLIC}")
    return socket.socket(family=family, type=type_, proto=proto)


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that connects only to addresses calls may reach; see the module docstring for how."""

    def __init__(self, resolver: Resolver | None = None) -> None:
        super().__init__(resolver=GuardedResolver(resolver), use_dns_cache=False, socket_factory=guarded_socket)

    async def _resolve_host(self, host: str, port: int, traces: Sequence[Trace] | None = None) -> list[ResolveResult]:
        # aiohttp returns IP literals without asking the resolver; send them through it too.
        if _literal_address(host) is not None or ":" in host:
            return await self._resolver.resolve(host, port, family=self._family)
        return await super()._resolve_host(host, port, traces=traces)


def guarded_connector(resolver: Resolver | None = None) -> aiohttp.TCPConnector:
    """The connector for every call made on behalf of a tenant's MCP server or OpenAPI tool.

    Use with `allow_redirects=False` and no proxy. `resolver` replaces DNS (for tests)."""
    return GuardedConnector(resolver)
