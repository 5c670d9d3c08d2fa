"""The per-deployment egress CA: made once per host (also when workers start together), or the operator's;
certificates for intercepted hosts that real clients trusting the sandbox bundle accept; the bundle itself."""

import asyncio
import datetime
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings

from gateway import tls
from gateway.tls import (
    CertificateAuthority,
    deployment_ca,
    intercepting_context,
    issue_leaf,
    sandbox_ca_bundle,
    sandbox_ca_environment,
    upstream_context,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_root(settings: Settings, tmp_path: Path) -> Path:
    settings.RUN_ROOT = tmp_path / "runs"
    settings.EGRESS_CA_CERT_FILE = ""
    settings.EGRESS_CA_KEY_FILE = ""
    return settings.RUN_ROOT


def write_ca(directory: Path, ca: CertificateAuthority) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "ca.pem", directory / "ca.key"
    cert_file.write_bytes(ca.certificate_pem)
    key_file.write_bytes(
        ca.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def new_ca() -> CertificateAuthority:
    return CertificateAuthority(*tls._new_ca())


# --- The deployment CA ---------------------------------------------------------------------------------


def test_a_host_without_a_configured_ca_makes_one_that_may_only_sign_server_certificates(run_root: Path) -> None:
    ca = deployment_ca()

    certificate = ca.certificate
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    common_name = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert str(common_name).startswith("Agent platform egress CA")
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert datetime.timedelta(days=3649) < lifetime < datetime.timedelta(days=3651)


def test_the_made_ca_key_is_private_and_the_folder_only_traversable(run_root: Path) -> None:
    deployment_ca()

    home = run_root / "egress-ca"
    assert home.stat().st_mode & 0o777 == 0o711
    assert (home / "private").stat().st_mode & 0o777 == 0o700
    assert (home / "private" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in home.iterdir()) == ["private"]  # no staging folder left behind


def test_the_made_ca_is_read_again_not_made_again(run_root: Path) -> None:
    first = deployment_ca()
    tls._own_ca.cache_clear()
    tls._load_ca.cache_clear()

    again = deployment_ca()

    assert again.fingerprint == first.fingerprint


def test_workers_starting_together_make_exactly_one_ca_and_all_use_it(run_root: Path) -> None:
    """Several processes race to make the CA at the same instant: each builds one, one rename wins."""
    start_at = time.time() + 2.0
    script = (
        "import time, django; django.setup(); from gateway.tls import deployment_ca\n"
        f"time.sleep(max(0, {start_at} - time.time()))\n"
        "print(deployment_ca().fingerprint)\n"
    )
    environment = {**os.environ, "RUN_ROOT": str(run_root), "DJANGO_SETTINGS_MODULE": "config.settings"}
    environment.pop("EGRESS_CA_CERT_FILE", None)
    environment.pop("EGRESS_CA_KEY_FILE", None)
    workers = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=environment, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]

    fingerprints = {worker.communicate(timeout=60)[0].strip() for worker in workers}

    assert all(worker.returncode == 0 for worker in workers)
    assert len(fingerprints) == 1
    assert fingerprints == {deployment_ca().fingerprint}
    assert sorted(path.name for path in (run_root / "egress-ca").iterdir()) == ["private"]


def test_the_operators_ca_is_used_when_both_files_are_set(settings: Settings, run_root: Path, tmp_path: Path) -> None:
    operators = new_ca()
    settings.EGRESS_CA_CERT_FILE, settings.EGRESS_CA_KEY_FILE = map(str, write_ca(tmp_path / "operator", operators))

    ca = deployment_ca()

    assert ca.fingerprint == operators.fingerprint
    assert not (run_root / "egress-ca").exists()


@pytest.mark.parametrize("only", ["EGRESS_CA_CERT_FILE", "EGRESS_CA_KEY_FILE"])
def test_one_ca_file_without_the_other_is_refused_naming_both(settings: Settings, run_root: Path, only: str) -> None:
    setattr(settings, only, "/run/secrets/egress-ca")

    with pytest.raises(ImproperlyConfigured, match="both EGRESS_CA_CERT_FILE and EGRESS_CA_KEY_FILE"):
        deployment_ca()


def test_a_key_that_is_not_the_certificates_is_refused(settings: Settings, run_root: Path, tmp_path: Path) -> None:
    cert_file, _ = write_ca(tmp_path / "one", new_ca())
    _, other_key = write_ca(tmp_path / "two", new_ca())
    settings.EGRESS_CA_CERT_FILE, settings.EGRESS_CA_KEY_FILE = str(cert_file), str(other_key)

    with pytest.raises(ImproperlyConfigured, match="the key is not the certificate's"):
        deployment_ca()


def test_a_certificate_that_is_not_a_ca_is_refused(settings: Settings, run_root: Path, tmp_path: Path) -> None:
    ca = new_ca()
    leaf_chain, leaf_key = issue_leaf(ca, "not-a-ca.example")
    (tmp_path / "leaf.pem").write_bytes(
        leaf_chain.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    (tmp_path / "leaf.key").write_bytes(leaf_key)
    settings.EGRESS_CA_CERT_FILE, settings.EGRESS_CA_KEY_FILE = str(tmp_path / "leaf.pem"), str(tmp_path / "leaf.key")

    with pytest.raises(ImproperlyConfigured, match="must be a CA's"):
        deployment_ca()


def test_an_unreadable_ca_file_is_refused_naming_it(settings: Settings, run_root: Path, tmp_path: Path) -> None:
    settings.EGRESS_CA_CERT_FILE, settings.EGRESS_CA_KEY_FILE = str(tmp_path / "missing.pem"), str(tmp_path / "k")

    with pytest.raises(ImproperlyConfigured, match=r"missing\.pem"):
        deployment_ca()


# --- Certificates for intercepted hosts --------------------------------------------------------------------


def test_a_leaf_names_its_host_lasts_a_week_and_was_valid_an_hour_ago(run_root: Path) -> None:
    chain, _ = issue_leaf(deployment_ca(), "api.github.com")

    leaf = x509.load_pem_x509_certificates(chain)[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["api.github.com"]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    now = datetime.datetime.now(datetime.UTC)
    assert now - leaf.not_valid_before_utc > datetime.timedelta(minutes=59)
    assert datetime.timedelta(days=6, hours=23) < leaf.not_valid_after_utc - now <= datetime.timedelta(days=7)


def test_an_ip_literal_gets_an_ip_address_name(run_root: Path) -> None:
    chain, _ = issue_leaf(deployment_ca(), "2001:db8::1")

    leaf = x509.load_pem_x509_certificates(chain)[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(address) for address in names.get_values_for_type(x509.IPAddress)] == ["2001:db8::1"]
    assert names.get_values_for_type(x509.DNSName) == []


def test_contexts_are_kept_per_host(run_root: Path) -> None:
    issued = tls._leaf_contexts.issued

    first = intercepting_context("api.github.com")
    again = intercepting_context("API.github.com.")
    other = intercepting_context("uploads.github.com")

    assert first is again
    assert other is not first
    assert tls._leaf_contexts.issued == issued + 2


def test_the_least_recently_used_context_goes_first_past_the_cache_size(run_root: Path) -> None:
    cache = tls._LeafContexts(size=2)
    ca = deployment_ca()
    first = cache.get(ca, "a.example")
    cache.get(ca, "b.example")
    cache.get(ca, "a.example")

    cache.get(ca, "c.example")

    assert [host for _, host in cache.entries] == ["a.example", "c.example"]
    assert cache.get(ca, "a.example") is first


def test_issuing_a_certificate_takes_milliseconds(run_root: Path) -> None:
    ca = deployment_ca()
    count = 50
    started = time.perf_counter()

    for number in range(count):
        tls._server_context(*issue_leaf(ca, f"host-{number}.example"))

    per_host_ms = (time.perf_counter() - started) / count * 1000
    print(f"\nleaf certificate + server context: {per_host_ms:.2f} ms per host")
    assert per_host_ms < 50


@pytest.mark.asyncio
@pytest.mark.parametrize(("host", "server_hostname"), [("localhost", "localhost"), ("127.0.0.1", "127.0.0.1")])
async def test_a_client_trusting_only_the_sandbox_bundle_accepts_the_intercepting_certificate(
    run_root: Path, host: str, server_hostname: str
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=intercepting_context(host))
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(sandbox_ca_bundle()))

    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=server_hostname)
        assert await reader.read() == b"hello"
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() in (None, "http/1.1")
        writer.close()


@pytest.mark.asyncio
async def test_a_client_checking_another_name_refuses_the_intercepting_certificate(run_root: Path) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=intercepting_context("a.example"))
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(sandbox_ca_bundle()))

    async with server:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="b.example")


# --- What the sandbox trusts --------------------------------------------------------------------------------


def test_the_bundle_holds_the_systems_roots_and_the_ca_readable_by_the_sandbox_user(run_root: Path) -> None:
    path = sandbox_ca_bundle()

    text = path.read_bytes()
    assert path.parent == run_root / "egress-ca"
    assert path.stat().st_mode & 0o777 == 0o644
    assert text.endswith(deployment_ca().certificate_pem)
    if tls.SYSTEM_BUNDLE.is_file():
        assert text.startswith(tls.SYSTEM_BUNDLE.read_bytes()[:2000])
        assert text.count(b"-----BEGIN CERTIFICATE-----") > 10


def test_the_bundle_is_written_once_per_ca(settings: Settings, run_root: Path, tmp_path: Path) -> None:
    first = sandbox_ca_bundle()
    written = first.stat().st_mtime_ns

    again = sandbox_ca_bundle()
    settings.EGRESS_CA_CERT_FILE, settings.EGRESS_CA_KEY_FILE = map(str, write_ca(tmp_path / "operator", new_ca()))
    other = sandbox_ca_bundle()

    assert again == first and first.stat().st_mtime_ns == written
    assert other != first
    assert other.read_bytes().endswith(deployment_ca().certificate_pem)


def test_an_update_of_the_hosts_roots_makes_a_new_bundle(
    run_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = tmp_path / "ca-certificates.crt"
    roots.write_bytes(new_ca().certificate_pem)
    monkeypatch.setattr(tls, "SYSTEM_BUNDLE", roots)
    before = sandbox_ca_bundle()

    roots.write_bytes(roots.read_bytes() + new_ca().certificate_pem)
    after = sandbox_ca_bundle()

    assert after != before
    assert after.read_bytes().startswith(roots.read_bytes())
    assert before.exists()  # a sandbox started before may still have it bound


def test_the_sandbox_environment_names_the_bundle_for_every_kind_of_client() -> None:
    environment = sandbox_ca_environment("/etc/ssl/certs/ca-certificates.crt")

    for name in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"):
        assert environment[name] == "/etc/ssl/certs/ca-certificates.crt"


# --- Towards the real host ----------------------------------------------------------------------------------


def test_the_upstream_context_verifies_names_and_speaks_tls_1_2_or_later(settings: Settings) -> None:
    settings.EGRESS_UPSTREAM_CA_FILE = ""

    context = upstream_context()

    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.cert_store_stats()["x509_ca"] > 0 or not tls.SYSTEM_BUNDLE.is_file()


def test_an_unreadable_upstream_ca_file_is_refused_naming_it(settings: Settings, tmp_path: Path) -> None:
    settings.EGRESS_UPSTREAM_CA_FILE = str(tmp_path / "nope.pem")

    with pytest.raises(ImproperlyConfigured, match=r"nope\.pem"):
        upstream_context()
