"""Where a run's sandbox may connect: allow-lists of hosts, addresses and ports, and the run's policy.

A rule is one string:

- `example.com`, `*.example.com` (its subdomains, not itself): a host name as the client names it;
- `10.1.2.3`, `10.1.0.0/16`, `2001:db8::/32`: addresses the connection would dial (a name whose every
  address falls in the network matches too);
- a port after a colon (`example.com:8080`, `[2001:db8::1]:443`, `10.1.0.0/16:5432`) or `:*` for any port;
  without one, the web's ports 80 and 443.

The tenant's list says where its runs may go; an agent profile's list may narrow it, never widen it (a
connection must pass both); the operator's `EGRESS_DENY` refuses whatever it matches, first. An address
on a list is still refused by the outbound guard (`gateway.egress`) when it is loopback, private,
link-local or reserved, unless the operator allows its range.
"""

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

WEB_PORTS = frozenset({80, 443})
MAX_RULES = 500
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"(\*\.)?({_LABEL}\.)*{_LABEL}")
_BRACKETED = re.compile(r"\[(?P<address>[^\]]+)\](:(?P<port>[^:]*))?")


class RuleError(ValueError):
    """A rule that cannot be read; the message names it and says how to write it."""


@dataclass(frozen=True)
class Rule:
    """One allow- or deny-list entry (see the module docstring)."""

    text: str
    name: str = ""  # a host name, or "*.suffix"
    network: IPNetwork | None = None
    ports: frozenset[int] | None = WEB_PORTS  # None: every port

    def allows_port(self, port: int) -> bool:
        return self.ports is None or port in self.ports

    def matches_name(self, host: str, port: int) -> bool:
        if not self.name or not self.allows_port(port):
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:]) and len(host) > len(self.name) - 1
        return host == self.name

    def matches_address(self, address: IPAddress, port: int) -> bool:
        return self.network is not None and self.allows_port(port) and address in self.network


def parse_rule(text: object) -> Rule:
    """The rule `text` writes, or RuleError saying what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError(f"{text!r} is not a rule: write a host (example.com, *.example.com), an address or a network")
    rule = text.strip().lower()
    if "://" in rule:  # a URL pasted whole, the likeliest mistake: its scheme would read as a port
        host = rule.split("://", 1)[1].split("/", 1)[0]
        raise RuleError(f"{text!r} is a URL: write its host alone ({host}), with a port after a colon if not 80 or 443")
    bracketed = _BRACKETED.fullmatch(rule)
    if bracketed:
        host, port = bracketed["address"], bracketed["port"]
    elif rule.count(":") == 1:
        host, port = rule.split(":")
    else:  # no port, or an IPv6 address or network written bare
        host, port = rule, None
    ports = _parse_ports(text, port)
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        return Rule(text=text.strip(), network=network, ports=ports)
    name = host.removesuffix(".")
    if not _NAME.fullmatch(name) or "." not in name.removeprefix("*."):
        raise RuleError(
            f"{text!r} is neither a host name (example.com, *.example.com), an address (10.1.2.3) nor a network "
            "(10.1.0.0/16); add a port after a colon (example.com:8080, or :* for any port)"
        )
    return Rule(text=text.strip(), name=name, ports=ports)


def _parse_ports(text: str, port: str | None) -> frozenset[int] | None:
    if port is None:
        return WEB_PORTS
    if port == "*":
        return None
    if port.isdigit() and 0 < int(port) < 65536:
        return frozenset({int(port)})
    raise RuleError(f"{text!r} names port {port!r}: write a port from 1 to 65535, or * for any port")


def parse_rules(rules: object, *, label: str = "the allow-list") -> tuple[Rule, ...]:
    """Every rule of a list as stored (a JSON list of strings), or RuleError naming the first bad one."""
    if not isinstance(rules, list | tuple):
        raise RuleError(f'{label} must be a list of rules such as ["example.com", "*.example.org:8443"]')
    if len(rules) > MAX_RULES:
        raise RuleError(f"{label} holds {len(rules)} rules; at most {MAX_RULES}")
    return tuple(parse_rule(rule) for rule in rules)


def platform_deny_rules() -> tuple[Rule, ...]:
    """The operator's EGRESS_DENY, refused for every tenant."""
    try:
        return parse_rules(list(getattr(settings, "EGRESS_DENY", [])), label="EGRESS_DENY")
    except RuleError as error:
        raise ImproperlyConfigured(str(error)) from None


def _any_name(rules: Iterable[Rule], host: str, port: int) -> Rule | None:
    return next((rule for rule in rules if rule.matches_name(host, port)), None)


def _all_addresses(rules: Sequence[Rule], addresses: Sequence[IPAddress], port: int) -> bool:
    return bool(addresses) and all(any(rule.matches_address(a, port) for rule in rules) for a in addresses)


@dataclass(frozen=True)
class EgressPolicy:
    """Where one run may connect: the tenant's list, narrowed by its agent profile's, minus the operator's denials.

    `headers` are the headers the proxy adds to requests for a host (secret values, already revealed: they live in
    the worker's memory only, never in the sandbox); `unusable` the hosts whose headers could not be made (a
    secret missing from the vault), with why: their connections are refused rather than sent without them."""

    tenant: tuple[Rule, ...] = ()
    profile: tuple[Rule, ...] | None = None
    deny: tuple[Rule, ...] = ()
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    unusable: dict[str, str] = field(default_factory=dict)

    @property
    def closed(self) -> bool:
        """Nothing may leave: no rule allows anything."""
        return not self.tenant or self.profile == ()

    def refusal_for_name(self, host: str, port: int) -> str | None:
        """Why the host name refuses `host:port` outright (the operator's deny list), or None."""
        denied = _any_name(self.deny, host, port)
        return f"{host} is on the platform's deny list ({denied.text})" if denied else None

    def refusal(self, host: str, port: int, addresses: Sequence[IPAddress]) -> str | None:
        """Why a connection to `host:port`, dialing `addresses`, is refused, or None when it is allowed."""
        denied = self.refusal_for_name(host, port)
        if denied:
            return denied
        for address in addresses:
            for rule in self.deny:
                if rule.matches_address(address, port):
                    return f"{host} means {address}, on the platform's deny list ({rule.text})"
        if host in self.unusable:
            return self.unusable[host]
        where = f"{host}:{port}"
        if not (_any_name(self.tenant, host, port) or _all_addresses(self.tenant, addresses, port)):
            return f"{where} is not on the tenant's egress allow-list"
        if self.profile is not None and not (
            _any_name(self.profile, host, port) or _all_addresses(self.profile, addresses, port)
        ):
            return f"{where} is not on the agent profile's egress allow-list"
        return None

    def headers_for(self, host: str) -> dict[str, str]:
        """The headers added to requests for `host` (by its exact name), if any."""
        return self.headers.get(host, {})

    def summary(self) -> dict[str, object]:
        """What run.started says of the policy: rules and which hosts get headers (their names, never values)."""
        return {
            "allow": [rule.text for rule in self.tenant],
            "profile_allow": None if self.profile is None else [rule.text for rule in self.profile],
            "deny": [rule.text for rule in self.deny],
            "credential_hosts": sorted({*self.headers, *self.unusable}),
        }
