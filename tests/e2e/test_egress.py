"""The sandbox's one door to the web, from inside: the agent's Bash tool (the real CLI in bubblewrap, driven by
the offline model) uses curl and Python's urllib through the run's egress proxy.

Only loopback is ever dialed: the test's servers listen on 127.0.0.1, names are answered by a real DNS server
on loopback (EGRESS_DNS_SERVERS), and the operator's range setting allows 127.0.0.0/8 for this platform only.
Metadata and private answers are refused before any socket is opened, so no packet leaves the machine.
"""

import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from agents.models import AgentVersion
from gateway.tls import CertificateAuthority, issue_leaf
from gateway.tls import _new_ca as new_ca
from mcp_servers import vault
from tenants.models import ApiKey, Tenant
from tenants.services import ensure_offline_model
from tests.e2e.egress_servers import Answers, EchoServer, dns_server, echo_server
from tests.e2e.harness import Client, Platform, database_url

SECRET = f"egress-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def names() -> Iterator[tuple[str, Answers]]:
    with dns_server() as served:
        yield served


@pytest.fixture(scope="module")
def web() -> Iterator[int]:
    with echo_server() as server:
        yield server.server_address[1]


@pytest.fixture(scope="module")
def internal() -> Iterator[int]:
    """A server the tenant lists by address (as an internal service would be), on 127.0.0.2."""
    with echo_server("127.0.0.2") as server:
        yield server.server_address[1]


@pytest.fixture(scope="module")
def upstream_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, Path]:
    """The CA of the test's "public" HTTPS server: the platform's proxy trusts it (EGRESS_UPSTREAM_CA_FILE), as it
    would a public root; the sandbox does not."""
    ca = CertificateAuthority(*new_ca())
    path = tmp_path_factory.mktemp("upstream-ca") / "ca.pem"
    path.write_bytes(ca.certificate_pem)
    return ca, path


@pytest.fixture(scope="module")
def secure(
    upstream_ca: tuple[CertificateAuthority, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EchoServer]:
    """An HTTPS echo server for secure.allowed.test, on loopback."""
    chain, key = issue_leaf(upstream_ca[0], "secure.allowed.test")
    pem = tmp_path_factory.mktemp("secure") / "server.pem"
    pem.write_bytes(chain + key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    with echo_server(tls=context) as server:
        yield server


@pytest.fixture(scope="module")
def egress(
    platform: Platform,
    names: tuple[str, Answers],
    upstream_ca: tuple[CertificateAuthority, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    """A platform whose egress proxies resolve names at the test's DNS server, may reach loopback, and trust the
    test's HTTPS server; its processes hold a secret the agent must never see."""
    served = Platform(
        database_url(connection.settings_dict),
        settings.REDIS_URL,
        tmp_path_factory.mktemp("egress"),
        EGRESS_DNS_SERVERS=names[0],
        EGRESS_ALLOWED_NETWORKS="127.0.0.0/8",
        EGRESS_UPSTREAM_CA_FILE=str(upstream_ca[1]),
    )
    served.start_web()
    served.start_worker()
    yield served
    served.stop()


@pytest.fixture
def acme(
    egress: Platform, transactional_db: None, names: tuple[str, Answers], web: int, internal: int, secure: EchoServer
) -> Client:
    answers = names[1]
    answers.table.clear()
    answers.table.update(
        {
            "api.allowed.test": ["127.0.0.1"],
            "metadata.allowed.test": ["169.254.169.254"],
            "intranet.allowed.test": ["10.20.30.40"],
            "rebinding.allowed.test": ["127.0.0.1"],
            "unlisted.example.test": ["127.0.0.1"],
            "secure.allowed.test": ["127.0.0.1"],
        }
    )
    secure_port = secure.server_address[1]
    tenant = Tenant.objects.create(
        id="acme",
        name="Acme",
        default_model=ensure_offline_model(),
        egress_allowlist=[
            f"*.allowed.test:{web}",
            "169.254.169.254:80",
            f"secure.allowed.test:{secure_port}",
            f"127.0.0.2:{internal}",
        ],
        egress_headers={"secure.allowed.test": {"Authorization": "Bearer ${api_token}"}},
    )
    vault.store(tenant, "api_token", SECRET)
    return Client(egress.base_url, tenant.pk, ApiKey.issue("e2e", tenant=tenant)[1])


def bash(client: Client, command: str, conversation: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Have the agent run `command`; what its Bash tool printed and the egress events of that run."""
    conversation = conversation or client.create_conversation()
    run = client.send(conversation, f"[[bash {command}]]")
    terminal = client.wait_for_terminal(conversation, run["id"], timeout=90)
    assert terminal["type"] == "run.completed", terminal
    events = [event for event in client.events(conversation) if event["run_id"] == run["id"]]
    return terminal["data"]["result"].split("[Bash result]", 1)[1], events


def egress_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["data"] for event in events if event["type"] == "egress"]


def test_curl_and_urllib_reach_an_allowed_name_and_a_listed_address_through_the_proxy(
    acme: Client, web: int, internal: int
) -> None:
    output, events = bash(
        acme,
        f"curl -sS http://api.allowed.test:{web}/from-curl; echo; "
        f"python3 -c \"import urllib.request; print(urllib.request.urlopen('http://api.allowed.test:{web}/from-python').read().decode())\"; "
        f"curl -sS http://127.0.0.2:{internal}/by-address",
    )

    lines = [json.loads(line) for line in output.strip().splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines] == ["/from-curl", "/from-python", "/by-address"]
    assert [line["headers"]["Host"] for line in lines[:2]] == [f"api.allowed.test:{web}"] * 2
    reported = egress_of(events)
    assert [(e["host"], e["port"], e["allowed"]) for e in reported] == [
        ("api.allowed.test", web, True),
        ("api.allowed.test", web, True),
        ("127.0.0.2", internal, True),
    ]
    assert all(e["bytes_up"] > 0 and e["bytes_down"] > 0 and e["duration_ms"] >= 0 for e in reported)
    started = next(event for event in events if event["type"] == "run.started")
    assert started["data"]["egress"]["mode"] == "proxy"
    completed = next(event for event in events if event["type"] == "run.completed")
    assert completed["data"]["egress"]["connections"] == 3 and completed["data"]["egress"]["refused"] == 0


def test_refusals_say_which_host_and_why_in_the_tool_result(acme: Client, web: int) -> None:
    output, events = bash(
        acme,
        f"curl -sS http://unlisted.example.test:{web}/; echo; "
        f"curl -sS http://127.0.0.2:{web}/; echo; "  # (127.0.0.1 itself is the sandbox's own loopback: NO_PROXY)
        "curl -sS http://metadata.allowed.test/latest/meta-data/; echo; "
        f"curl -sS http://intranet.allowed.test:{web}/; echo; "
        f"python3 -c \"import urllib.request; urllib.request.urlopen('https://unlisted.example.test:{web}/')\" 2>&1 | tail -1",
    )

    assert f"unlisted.example.test:{web} is not on the tenant's egress allow-list" in output
    assert f"127.0.0.2:{web} is not on the tenant's egress allow-list" in output
    assert "metadata.allowed.test resolves to 169.254.169.254, the link-local cloud metadata address" in output
    assert "intranet.allowed.test resolves to 10.20.30.40, a private address" in output
    assert "Tunnel connection failed: 403 Egress refused: unlisted.example.test" in output
    assert output.count("an operator or the tenant can allow") == 4
    refused = [e for e in egress_of(events) if not e["allowed"]]
    assert len(refused) == 5 and all(e["reason"] for e in refused)
    assert {e["host"] for e in refused} == {
        "unlisted.example.test",
        "127.0.0.2",
        "metadata.allowed.test",
        "intranet.allowed.test",
    }


def test_nothing_leaves_without_the_proxy_and_names_do_not_resolve_inside(acme: Client, web: int) -> None:
    output, events = bash(
        acme,
        f"curl -sS --noproxy '*' --max-time 5 http://127.0.0.1:{web}/ 2>&1; echo; "
        f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {web}), timeout=5)\" 2>&1 | tail -1; "
        "getent hosts api.allowed.test || echo no-dns",
    )

    assert "Failed to connect to 127.0.0.1" in output or "Connection refused" in output
    assert "ConnectionRefusedError" in output
    assert "no-dns" in output
    assert egress_of(events) == []


def test_a_name_rebound_to_a_private_address_is_refused_on_the_next_connection(
    acme: Client, web: int, names: tuple[str, Answers]
) -> None:
    conversation = acme.create_conversation()
    before, _ = bash(acme, f"curl -sS http://rebinding.allowed.test:{web}/first", conversation)
    names[1].table["rebinding.allowed.test"] = ["127.0.0.1", "10.0.0.9"]

    after, events = bash(acme, f"curl -sS http://rebinding.allowed.test:{web}/second", conversation)

    assert '"path": "/first"' in before
    assert "rebinding.allowed.test resolves to 10.0.0.9, a private address" in after
    assert [e["allowed"] for e in egress_of(events)] == [False]


def test_an_agent_profile_narrows_the_tenants_list(acme: Client, web: int) -> None:
    profile = acme.http.post(
        f"/api/tenants/{acme.tenant}/agents",
        json={"name": "narrow", "egress_allowlist": [f"api.allowed.test:{web}"]},
    )
    assert profile.status_code == 201, profile.text
    conversation = acme.create_conversation(agent="narrow")

    output, _ = bash(
        acme,
        f"curl -sS http://api.allowed.test:{web}/ok; echo; curl -sS http://rebinding.allowed.test:{web}/no",
        conversation,
    )

    assert '"path": "/ok"' in output
    assert f"rebinding.allowed.test:{web} is not on the agent profile's egress allow-list" in output
    assert AgentVersion.objects.get(profile__name="narrow").egress_allowlist == [f"api.allowed.test:{web}"]


def test_the_tenants_secret_header_reaches_the_server_and_never_the_sandbox(
    acme: Client, egress: Platform, secure: EchoServer
) -> None:
    port = secure.server_address[1]
    conversation = acme.create_conversation()
    secure.seen.clear()

    fetched, events = bash(
        acme,
        f"curl -sS https://secure.allowed.test:{port}/with-curl; echo; "
        f"python3 -c \"import urllib.request; print(urllib.request.urlopen('https://secure.allowed.test:{port}/with-python').read().decode())\"; "
        f"curl -sS http://secure.allowed.test:{port}/in-clear",
        conversation,
    )
    # The pattern matches the secret but is not it (so grep finds no copy of itself in /proc); it is looked for in
    # the environment, every process's environment and command line, and every file the sandbox can write or
    # the platform could have put it in.
    pattern = f"{SECRET[:14]}[{SECRET[14]}]{SECRET[15:]}"
    looked, _ = bash(
        acme,
        "echo bundle=$(env | grep -c SSL_CERT_FILE=/opt/egress/ca-bundle.pem); "
        "all=$({ env; cat /proc/*/environ; cat /proc/*/cmdline; ps -eo args; "
        "find /workspace /tmp /home /run /etc /opt/egress -type f -exec cat {} + ; } 2>/dev/null | tr '\\0' '\\n'); "
        f'echo found=$(grep -c \'{pattern}\' <<< "$all"); echo control=$(grep -c ANTHROPIC_BASE_URL= <<< "$all")',
        conversation,
    )

    lines = [json.loads(line) for line in fetched.strip().splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines] == ["/with-curl", "/with-python"]
    assert all(line["headers"]["Authorization"] == "present" for line in lines)
    assert [(seen["path"], seen["Authorization"]) for seen in secure.seen] == [
        ("/with-curl", f"Bearer {SECRET}"),
        ("/with-python", f"Bearer {SECRET}"),
    ]
    assert "secure.allowed.test gets the tenant's credentials only over HTTPS" in fetched
    reported = egress_of(events)
    assert [e.get("credentials") for e in reported if e["allowed"]] == [["Authorization"], ["Authorization"]]
    assert "bundle=1" in looked and "found=0" in looked, looked
    assert "control=0" not in looked, looked  # what was searched held the environment the sandbox runs with
    assert SECRET not in looked and SECRET not in fetched
    assert SECRET not in json.dumps(acme.events(conversation))
    assert SECRET not in egress.logs()


def test_the_clis_web_fetch_goes_through_the_proxy_and_trusts_the_egress_ca(acme: Client, secure: EchoServer) -> None:
    # WebFetch asks for https:// whatever it is given; this host's tunnel is intercepted (it has a secret header),
    # so the CLI's own TLS client must trust the egress CA.
    conversation = acme.create_conversation()
    url = f"https://secure.allowed.test:{secure.server_address[1]}/fetched-by-webfetch"
    run = acme.send(conversation, '[[tool WebFetch {"url": "' + url + '", "prompt": "What path was asked?"}]]')
    terminal = acme.wait_for_terminal(conversation, run["id"], timeout=90)

    events = acme.events(conversation)
    results = [event["data"] for event in events if event["type"] == "tool.result"]
    reported = egress_of(events)
    assert terminal["type"] == "run.completed", terminal
    assert [(e["host"], e["allowed"]) for e in reported] == [("secure.allowed.test", True)], (reported, results)
    assert not results[0]["is_error"], results
    assert secure.seen[-1]["path"] == "/fetched-by-webfetch"


def test_a_stored_rule_that_cannot_be_read_fails_the_run_closed_saying_so(acme: Client) -> None:
    Tenant.objects.filter(pk=acme.tenant).update(egress_allowlist=["api.allowed.test:99999"])  # around the checks
    conversation = acme.create_conversation()

    run = acme.send(conversation, "[[bash curl -sS http://api.allowed.test/]]")
    terminal = acme.wait_for_terminal(conversation, run["id"], timeout=60)

    assert terminal["type"] == "run.failed"
    assert terminal["data"]["error"]["reason"] == "egress_unavailable"
    assert "names port '99999'" in terminal["data"]["error"]["message"]
    assert [event["type"] for event in acme.events(conversation)] == ["run.queued", "run.failed"]
