"""What a tenant's egress settings may hold, and the policy a run's egress proxy enforces, built from them.

A tenant's `egress_allowlist` says where its runs' sandboxes may connect (rules: `gateway.allowlist`); an agent
version's `egress_allowlist` narrows it; `egress_headers` (host → header → value) are added by the proxy to
requests for that exact host, a value naming the tenant's secrets as `${name}`. The checks here serve REST and the
admin alike; `egress_policy` is the one place a run's secrets for egress are revealed. Here and not in `tenants`:
the rules are the gateway's and the secrets the vault's, floors that `tenants` stands below.
"""

import ipaddress
import re
from collections.abc import Mapping

from gateway.allowlist import EgressPolicy, Rule, RuleError, parse_rule, parse_rules, platform_deny_rules
from mcp_servers.models import SECRET_REFERENCE, Secret
from mcp_servers.vault import SecretUnreadable, reveal
from tenants.models import Tenant

MAX_HEADER_HOSTS = 100
MAX_HEADERS_PER_HOST = 20
MAX_HEADER_VALUE_CHARS = 8192
# RFC 9110 `token`: what a header name may be made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers that say how the message is framed or carried, hop by hop: the proxy owns them, a tenant may not set them.
_RESERVED_HEADERS = frozenset(
    {"host", "connection", "content-length", "transfer-encoding", "upgrade", "te", "trailer", "keep-alive"}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
HEADERS_EXAMPLE = '{"api.github.com": {"Authorization": "Bearer ${github_token}"}}'


class EgressSettingsError(ValueError):
    """Egress settings that cannot be stored; `field` is the one to fix, the message says how."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_allowlist(rules: object, *, field: str = "egress_allowlist") -> list[str]:
    """The rules as stored (each stripped), or EgressSettingsError naming the first bad one and how to write it."""
    try:
        parsed = parse_rules(rules, label=field)
    except RuleError as problem:
        raise EgressSettingsError(field, str(problem)) from None
    return [rule.text for rule in parsed]


def check_headers(headers: object, allowlist: list[str]) -> dict[str, dict[str, str]]:
    """The headers as stored (host names lowercased), or EgressSettingsError saying what to fix. Each host must be
    an exact name or address that `allowlist` (already checked) allows; a secret a value names need not exist yet
    (see `missing_secrets`)."""
    if not isinstance(headers, Mapping):
        raise _header_problem(f"A JSON object of host → header → value, such as {HEADERS_EXAMPLE}.")
    if len(headers) > MAX_HEADER_HOSTS:
        raise _header_problem(f"{len(headers)} hosts; at most {MAX_HEADER_HOSTS}.")
    rules = parse_rules(allowlist)
    checked: dict[str, dict[str, str]] = {}
    for written, host_headers in headers.items():
        host = _exact_host(written)
        if host in checked:
            raise _header_problem(f"{written!r}: the host is named twice.")
        if not host_listed(rules, host):
            raise _header_problem(
                f"{written!r} is not on the tenant's egress allow-list, so no request could reach it: add "
                f"{host!r} to egress_allowlist too."
            )
        checked[host] = _check_host_headers(host, host_headers)
    return checked


def _exact_host(written: object) -> str:
    """A header host as the proxy matches it: an exact name or a single address, without a port."""
    how = "write an exact host name (api.example.com) or address (10.1.2.3), without wildcard or port"
    if not isinstance(written, str):
        raise _header_problem(f"{written!r}: {how}.")
    text = written.strip().lower().removesuffix(".")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        rule = parse_rule(text)
    except RuleError:
        raise _header_problem(f"{written!r}: {how}.") from None
    if not rule.name or rule.name.startswith("*.") or ":" in text:
        raise _header_problem(f"{written!r}: {how}.")
    return rule.name


def _check_host_headers(host: str, headers: object) -> dict[str, str]:
    if not isinstance(headers, Mapping) or not headers:
        raise _header_problem(
            f"{host}: an object of header name → value, such as {{'Authorization': 'Bearer ${{token}}'}}."
        )
    if len(headers) > MAX_HEADERS_PER_HOST:
        raise _header_problem(f"{host}: {len(headers)} headers; at most {MAX_HEADERS_PER_HOST}.")
    seen: set[str] = set()
    for name, value in headers.items():
        where = f"{host}: header {name!r}"
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise _header_problem(f"{where} is not a header name: letters, digits and !#$%&'*+.^_`|~- only.")
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS or lowered.startswith("proxy-"):
            raise _header_problem(
                f"{where} says how the request is framed or carried, which is the proxy's to set; "
                "choose an end-to-end header such as Authorization or X-Api-Key."
            )
        if lowered in seen:
            raise _header_problem(f"{where} is named twice (header names are case-insensitive).")
        seen.add(lowered)
        if not isinstance(value, str) or not value.strip():
            raise _header_problem(f"{where}: the value must be non-empty text.")
        if len(value) > MAX_HEADER_VALUE_CHARS:
            raise _header_problem(f"{where}: the value is longer than {MAX_HEADER_VALUE_CHARS:,} characters.")
        if _CONTROL.search(value):
            raise _header_problem(f"{where}: the value holds a line break or control character.")
        if "${" in SECRET_REFERENCE.sub("", value):
            raise _header_problem(
                f"{where}: write each secret as ${{name}}, the name 1-64 letters, digits, '.', '-' or '_'."
            )
    return {str(name): str(value) for name, value in headers.items()}


def _header_problem(message: str) -> EgressSettingsError:
    return EgressSettingsError("egress_headers", message)


def host_listed(rules: tuple[Rule, ...], host: str) -> bool:
    """Whether `rules` allow `host` (an exact name or address) on some port: a name by a name rule, an address by
    an address rule. What headers need: a name allowed only through the addresses it resolves to cannot be told
    before a run."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return any(rule.matches_name(host, port) for rule in rules for port in (rule.ports or {443}))
    return any(rule.matches_address(address, port) for rule in rules for port in (rule.ports or {443}))


def secret_names(headers: Mapping[str, Mapping[str, str]]) -> dict[str, set[str]]:
    """The secrets each host's header values name."""
    return {
        host: {name for value in host_headers.values() for name in SECRET_REFERENCE.findall(value)}
        for host, host_headers in headers.items()
    }


def missing_secrets(headers: Mapping[str, Mapping[str, str]], stored: set[str], tenant_id: str) -> list[str]:
    """Why a host's headers could not be made now: one line per secret named but not in `stored` (the names of the
    tenant's secrets). A warning at save time (the secret may be stored next), a refusal of that host at run time."""
    return [
        f"{host}: the secret {name!r} is not in the tenant's secrets; requests to {host} are refused until it is "
        f"stored (PUT /api/tenants/{tenant_id}/secrets/{name})"
        for host, names in sorted(secret_names(headers).items())
        for name in sorted(names - stored)
    ]


def egress_warnings(tenant: Tenant) -> list[str]:
    """What stops the tenant's egress headers from being made, as it stands (read each time: a secret may be stored
    or deleted after the headers were saved). Uses the tenant's prefetched `secrets` when there are."""
    if not tenant.egress_headers:
        return []
    stored = {secret.name for secret in tenant.secrets.all()}
    return missing_secrets(tenant.egress_headers, stored, tenant.pk)


def build_egress_policy(tenant: Tenant, profile_allowlist: list[str] | None) -> EgressPolicy:
    """The policy of a run of `tenant` whose agent version narrows its allow-list to `profile_allowlist` (None:
    not at all): the operator's deny list, and headers with their secrets revealed, for the hosts the run may reach.

    A host whose headers cannot be made (a secret missing, or unreadable) is `unusable`, with a reason the model
    reads: its requests are refused rather than sent without their credentials. Secret values live only in the
    returned object; nothing here logs them."""
    tenant_rules = parse_rules(tenant.egress_allowlist, label="the tenant's egress allow-list")
    profile_rules = (
        None if profile_allowlist is None else parse_rules(profile_allowlist, label="the profile's egress allow-list")
    )
    reachable = {
        host: host_headers
        for host, host_headers in dict(tenant.egress_headers or {}).items()
        if host_listed(tenant_rules, host) and (profile_rules is None or host_listed(profile_rules, host))
    }
    needed = set().union(*secret_names(reachable).values()) if reachable else set()
    revealed: dict[str, str] = {}
    unreadable: set[str] = set()
    for secret in Secret.objects.filter(tenant=tenant, name__in=needed):
        try:
            revealed[secret.name] = reveal(secret)
        except SecretUnreadable:
            unreadable.add(secret.name)
    headers: dict[str, dict[str, str]] = {}
    unusable: dict[str, str] = {}
    for host, host_headers in sorted(reachable.items()):
        problem = _unusable_reason(tenant.pk, host, secret_names({host: host_headers})[host], revealed, unreadable)
        if problem:
            unusable[host] = problem
            continue
        headers[host] = {
            name: SECRET_REFERENCE.sub(lambda match: revealed[match[1]], value) for name, value in host_headers.items()
        }
    return EgressPolicy(
        tenant=tenant_rules, profile=profile_rules, deny=platform_deny_rules(), headers=headers, unusable=unusable
    )


def _unusable_reason(
    tenant_id: str, host: str, names: set[str], revealed: Mapping[str, str], unreadable: set[str]
) -> str | None:
    for name in sorted(names):
        if name in unreadable:
            return (
                f"{host} needs the tenant's secret {name!r}, which cannot be decrypted: the operator must restore its "
                "key (SECRETS_KEYS), or the tenant store it again"
            )
        if name not in revealed:
            return (
                f"{host} needs the tenant's secret {name!r}, which is not stored: the tenant (or the operator) can add "
                f"it (PUT /api/tenants/{tenant_id}/secrets/{name}), then retry"
            )
        if _CONTROL.search(revealed[name]):
            return f"{host} needs the tenant's secret {name!r}, whose value holds a line break a header cannot carry"
    return None
