"""Allow-list rules as written, and the policy a run's egress proxy asks about each connection."""

import ipaddress
import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings

from gateway.allowlist import (
    MAX_RULES,
    WEB_PORTS,
    EgressPolicy,
    RuleError,
    parse_rule,
    parse_rules,
    platform_deny_rules,
)


def addresses(*texts: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(text) for text in texts]


def policy(tenant: list[str], profile: list[str] | None = None, deny: list[str] | None = None) -> EgressPolicy:
    return EgressPolicy(
        tenant=parse_rules(tenant),
        profile=None if profile is None else parse_rules(profile),
        deny=parse_rules(deny or []),
    )


# --- Reading rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "network", "ports"),
    [
        ("example.com", "example.com", None, WEB_PORTS),
        ("*.example.com", "*.example.com", None, WEB_PORTS),
        ("example.com:8080", "example.com", None, frozenset({8080})),
        ("example.com:*", "example.com", None, None),
        ("Example.COM.", "example.com", None, WEB_PORTS),
        ("10.1.2.3", "", "10.1.2.3/32", WEB_PORTS),
        ("10.1.0.0/16", "", "10.1.0.0/16", WEB_PORTS),
        ("10.1.0.0/16:5432", "", "10.1.0.0/16", frozenset({5432})),
        ("2001:db8::/32", "", "2001:db8::/32", WEB_PORTS),
        ("[2001:db8::1]:443", "", "2001:db8::1/128", frozenset({443})),
        ("[2001:db8::1]", "", "2001:db8::1/128", WEB_PORTS),
    ],
)
def test_every_documented_form_reads_as_its_host_and_ports(
    text: str, name: str, network: str | None, ports: frozenset[int] | None
) -> None:
    rule = parse_rule(text)

    assert (rule.name, str(rule.network) if rule.network else None, rule.ports) == (name, network, ports)
    assert rule.text == text.strip()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is not a rule"),
        (42, "is not a rule"),
        ("localhost", "is neither a host name"),
        ("https://example.com/x", "is a URL: write its host alone (example.com)"),
        ("example.com/path", "is neither a host name"),
        ("exa mple.com", "is neither a host name"),
        ("*example.com", "is neither a host name"),
        ("*", "is neither a host name"),
        ("example.com:0", "names port '0'"),
        ("example.com:65536", "names port '65536'"),
        ("example.com:http", "names port 'http'"),
        ("[2001:db8::1]:x", "names port 'x'"),
    ],
)
def test_a_bad_rule_is_refused_with_a_message_naming_it_and_how_to_write_it(text: object, says: str) -> None:
    with pytest.raises(RuleError) as refused:
        parse_rule(text)

    assert says in str(refused.value)
    assert repr(text) in str(refused.value)


def test_a_list_must_be_a_list_and_not_too_long() -> None:
    with pytest.raises(RuleError, match="egress_allowlist must be a list of rules"):
        parse_rules("example.com", label="egress_allowlist")
    with pytest.raises(RuleError, match=f"at most {MAX_RULES}"):
        parse_rules([f"h{i}.example.com" for i in range(MAX_RULES + 1)])


def test_the_first_bad_rule_of_a_list_is_named() -> None:
    with pytest.raises(RuleError, match=re.escape("'example.com:99999'")):
        parse_rules(["ok.example.com", "example.com:99999", "also bad"])


def test_the_operators_deny_list_is_read_from_settings(settings: Settings) -> None:
    settings.EGRESS_DENY = ["*.internal.example", "169.254.0.0/16:*"]

    assert [rule.text for rule in platform_deny_rules()] == ["*.internal.example", "169.254.0.0/16:*"]

    settings.EGRESS_DENY = ["bad rule"]
    with pytest.raises(ImproperlyConfigured, match="'bad rule'"):
        platform_deny_rules()


# --- Deciding a connection -----------------------------------------------------------------------------


def test_an_empty_tenant_list_lets_nothing_out() -> None:
    closed = policy([])

    assert closed.closed
    assert "not on the tenant's egress allow-list" in (
        closed.refusal("example.com", 443, addresses("93.184.215.14")) or ""
    )


def test_a_host_rule_allows_the_webs_ports_only() -> None:
    allowed = policy(["example.com"])

    assert allowed.refusal("example.com", 443, []) is None
    assert allowed.refusal("example.com", 80, []) is None
    assert allowed.refusal("example.com", 8080, []) == "example.com:8080 is not on the tenant's egress allow-list"


def test_a_port_rule_allows_that_port_only_and_star_any_port() -> None:
    assert policy(["example.com:8080"]).refusal("example.com", 8080, []) is None
    assert policy(["example.com:8080"]).refusal("example.com", 443, []) is not None
    assert policy(["example.com:*"]).refusal("example.com", 22, []) is None


def test_a_wildcard_matches_subdomains_not_the_host_itself_nor_lookalikes() -> None:
    wildcard = policy(["*.example.com"])

    assert wildcard.refusal("api.example.com", 443, []) is None
    assert wildcard.refusal("a.b.example.com", 443, []) is None
    assert wildcard.refusal("example.com", 443, []) is not None
    assert wildcard.refusal("evilexample.com", 443, []) is not None
    assert wildcard.refusal("example.com.evil.net", 443, []) is not None


def test_an_address_rule_matches_when_every_resolved_address_is_in_it() -> None:
    internal = policy(["10.1.0.0/16:5432"])

    assert internal.refusal("db.corp", 5432, addresses("10.1.2.3")) is None
    assert internal.refusal("db.corp", 5432, addresses("10.1.2.3", "10.2.0.1")) is not None
    assert internal.refusal("db.corp", 5432, []) is not None
    assert internal.refusal("db.corp", 443, addresses("10.1.2.3")) is not None


def test_the_profile_narrows_the_tenants_list_and_never_widens_it() -> None:
    narrowed = policy(["*.example.com", "pypi.org"], profile=["api.example.com", "github.com"])

    assert narrowed.refusal("api.example.com", 443, []) is None
    assert narrowed.refusal("pypi.org", 443, []) == "pypi.org:443 is not on the agent profile's egress allow-list"
    assert narrowed.refusal("github.com", 443, []) == "github.com:443 is not on the tenant's egress allow-list"


def test_an_empty_profile_list_lets_nothing_out_and_null_keeps_the_tenants() -> None:
    assert policy(["example.com"], profile=[]).closed
    assert policy(["example.com"], profile=[]).refusal("example.com", 443, []) is not None
    assert not policy(["example.com"], profile=None).closed


def test_the_deny_list_refuses_first_by_name_and_by_resolved_address() -> None:
    denying = policy(["*.example.com", "10.0.0.0/8:*"], deny=["secret.example.com", "10.9.0.0/16:*"])

    assert denying.refusal("secret.example.com", 443, []) == (
        "secret.example.com is on the platform's deny list (secret.example.com)"
    )
    assert "means 10.9.1.1, on the platform's deny list" in (
        denying.refusal("www.example.com", 443, addresses("10.9.1.1")) or ""
    )
    assert denying.refusal("www.example.com", 443, addresses("10.1.1.1")) is None


def test_a_host_whose_headers_could_not_be_made_is_refused_with_why() -> None:
    broken = EgressPolicy(
        tenant=parse_rules(["api.github.com"]),
        headers={},
        unusable={"api.github.com": "api.github.com needs the tenant's secret 'github_token', which is not stored"},
    )

    assert "github_token" in (broken.refusal("api.github.com", 443, []) or "")
    assert broken.headers_for("api.github.com") == {}


def test_the_summary_names_credential_hosts_never_header_values() -> None:
    summarised = EgressPolicy(
        tenant=parse_rules(["api.github.com", "*.example.com"]),
        profile=parse_rules(["api.github.com"]),
        headers={"api.github.com": {"Authorization": "Bearer s3cr3t"}},
        unusable={"api.example.com": "no"},
    )

    summary = summarised.summary()

    assert summary == {
        "allow": ["api.github.com", "*.example.com"],
        "profile_allow": ["api.github.com"],
        "deny": [],
        "credential_hosts": ["api.example.com", "api.github.com"],
    }
    assert "s3cr3t" not in str(summary)
