"""The per-deployment CA that lets the egress proxy add a tenant's secret headers to HTTPS requests.

For the hosts a tenant gives secret headers (and only those), the proxy answers the sandbox's TLS itself
with a certificate for the host signed by this CA, reads the requests, adds the headers, and speaks TLS
to the real host, verifying it as any client would. The sandbox trusts the CA through a bundle (the
system's roots plus this CA) bound over its /etc/ssl/certs/ca-certificates.crt and named in
SSL_CERT_FILE, NODE_EXTRA_CA_CERTS and friends. Every other host is tunnelled untouched.

The CA is the operator's (EGRESS_CA_CERT_FILE / EGRESS_CA_KEY_FILE, the same on every host) or, unset,
made once per host under RUN_ROOT/egress-ca/private. Its key never enters the sandbox: the sandbox gets
the certificate only.
"""

import contextlib
import datetime
import errno
import functools
import hashlib
import ipaddress
import os
import secrets
import shutil
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

CA_NAME = "Agent platform egress CA"
CA_DAYS = 3650
# Leaf certificates live in memory only and are made again well before they expire; backdated for clocks
# inside the sandbox that run a little behind the worker's.
LEAF_DAYS = 7
LEAF_REISSUE_SECONDS = 24 * 3600
LEAF_BACKDATE = datetime.timedelta(hours=1)
LEAF_CACHE_SIZE = 512
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Where the sandbox finds the bundle (bound there over the host's, see sandbox/bin/agent-sandbox).
SANDBOX_BUNDLE_PATH = str(SYSTEM_BUNDLE)


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @functools.cached_property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @functools.cached_property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()


def deployment_ca() -> CertificateAuthority:
    """The operator's CA (EGRESS_CA_CERT_FILE and EGRESS_CA_KEY_FILE, both or neither), else this host's own,
    made on first use under RUN_ROOT/egress-ca/private; read once per process."""
    cert_file, key_file = settings.EGRESS_CA_CERT_FILE, settings.EGRESS_CA_KEY_FILE
    if bool(cert_file) != bool(key_file):
        raise ImproperlyConfigured(
            "Set both EGRESS_CA_CERT_FILE and EGRESS_CA_KEY_FILE (the egress CA's certificate and its key, PEM), "
            "or neither to have one made under RUN_ROOT/egress-ca."
        )
    if cert_file:
        return _load_ca(Path(cert_file), Path(key_file))
    return _own_ca(Path(settings.RUN_ROOT))


@functools.cache
def _load_ca(cert_file: Path, key_file: Path) -> CertificateAuthority:
    where = f"The egress CA ({cert_file} and {key_file}, from EGRESS_CA_CERT_FILE/EGRESS_CA_KEY_FILE or made under RUN_ROOT)"
    try:
        certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise ImproperlyConfigured(
            f"{where} could not be read ({type(error).__name__}: {error}); both must be PEM, the key unencrypted."
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ImproperlyConfigured(f"{where}: the key must be an EC or RSA private key.")
    if key.public_key() != certificate.public_key():
        raise ImproperlyConfigured(f"{where}: the key is not the certificate's.")
    try:
        constraints: x509.BasicConstraints | None = certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ImproperlyConfigured(f"{where}: the certificate must be a CA's (basicConstraints CA:TRUE).")
    return CertificateAuthority(certificate, key)


@functools.cache
def _own_ca(run_root: Path) -> CertificateAuthority:
    """This host's CA. Several workers may start at once: each builds a complete CA in a directory of its own
    and renames it into place; rename(2) of a directory onto an existing, non-empty one fails, so exactly one
    wins and every process then reads the winner's."""
    home = run_root / "egress-ca"
    home.mkdir(mode=0o711, parents=True, exist_ok=True)  # traversable: the sandbox uid reads the bundle here
    private = home / "private"
    if not (private / "key.pem").exists():
        staging = home / f".private-{os.getpid()}-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        try:
            certificate, key = _new_ca()
            key_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            _write_new(staging / "key.pem", key_pem, 0o600)
            _write_new(staging / "cert.pem", certificate.public_bytes(serialization.Encoding.PEM), 0o644)
            try:
                os.rename(staging, private)
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # those say another process won
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _load_ca(private / "cert.pem", private / "key.pem")


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A short random suffix tells one deployment's CA from another's in a client's error message.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Agent platform"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_NAME} {secrets.token_hex(4)}"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - LEAF_BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def issue_leaf(ca: CertificateAuthority, host: str) -> tuple[bytes, bytes]:
    """A certificate (PEM, with the CA's after it) and its key (PEM) for `host`, a DNS name or an IP literal."""
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        alternative: x509.GeneralName = x509.IPAddress(address)
        common_name = str(address)
    except ValueError:
        alternative = x509.DNSName(host)
        common_name = host[:64]  # the CN's limit; the SAN carries the full name, and clients read the SAN
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + datetime.timedelta(days=LEAF_DAYS), ca.certificate.not_valid_after_utc)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - LEAF_BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.certificate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM) + ca.certificate_pem, key_pem


def _server_context(chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # the proxy reads HTTP/1.1 only: no h2 offered
    # load_cert_chain reads files only: an anonymous memory file keeps the leaf's key off every disk.
    descriptor = os.memfd_create("egress-leaf", os.MFD_CLOEXEC)
    try:
        os.write(descriptor, chain_pem + key_pem)
        context.load_cert_chain(f"/proc/self/fd/{descriptor}")
    finally:
        os.close(descriptor)
    return context


class _LeafContexts:
    """Server contexts per (CA, host), least recently used dropped past LEAF_CACHE_SIZE, and made again a day
    after issue (the certificate lasts a week). Locked: runs may serve their proxies from several threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[str, str], tuple[float, ssl.SSLContext]] = OrderedDict()
        self.lock = threading.Lock()
        self.issued = 0

    def get(self, ca: CertificateAuthority, host: str) -> ssl.SSLContext:
        key = (ca.fingerprint, host)
        now = time.monotonic()
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None and now - entry[0] < LEAF_REISSUE_SECONDS:
                self.entries.move_to_end(key)
                return entry[1]
        context = _server_context(*issue_leaf(ca, host))
        with self.lock:
            self.issued += 1
            self.entries[key] = (now, context)
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return context

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_leaf_contexts = _LeafContexts(LEAF_CACHE_SIZE)


def normalized_host(host: str) -> str:
    """The name a certificate carries for `host`: lower case, no trailing dot, an IP literal in its canonical
    spelling (IPv6 without brackets)."""
    host = host.strip().lower().removesuffix(".")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host.strip("[]")))
    return host


def intercepting_context(host: str) -> ssl.SSLContext:
    """A server-side TLS context presenting a certificate for `host` signed by the deployment CA (cached)."""
    return _leaf_contexts.get(deployment_ca(), normalized_host(host))


@functools.cache
def _upstream_context(extra_ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if extra_ca_file:
        try:
            context.load_verify_locations(cafile=extra_ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ImproperlyConfigured(
                f"EGRESS_UPSTREAM_CA_FILE={extra_ca_file} could not be read as PEM certificates ({error})."
            ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    return context


def upstream_context() -> ssl.SSLContext:
    """A client TLS context for the real host: the system's roots plus EGRESS_UPSTREAM_CA_FILE, names checked."""
    return _upstream_context(settings.EGRESS_UPSTREAM_CA_FILE)


def sandbox_ca_bundle() -> Path:
    """A PEM bundle the sandbox trusts: the system's roots (when the host has them) and the deployment CA.

    Written under RUN_ROOT/egress-ca (traversable, the file world-readable: bubblewrap binds it as the sandbox
    uid), named by a digest of its content, so that a new CA or an update of the host's roots makes a new file
    and no reader ever sees half of one."""
    ca = deployment_ca()
    system = SYSTEM_BUNDLE.read_bytes() if SYSTEM_BUNDLE.is_file() else b""
    if system and not system.endswith(b"\n"):
        system += b"\n"
    content = system + f"# {CA_NAME}\n".encode() + ca.certificate_pem
    home = Path(settings.RUN_ROOT) / "egress-ca"
    home.mkdir(mode=0o711, parents=True, exist_ok=True)
    path = home / f"bundle-{hashlib.sha256(content).hexdigest()[:16]}.pem"
    if not path.exists():
        staging = home / f".bundle-{os.getpid()}-{secrets.token_hex(4)}"
        _write_new(staging, content, 0o644)
        os.chmod(staging, 0o644)  # whatever the umask
        os.replace(staging, path)
    return path


def sandbox_ca_environment(path_inside: str = SANDBOX_BUNDLE_PATH) -> dict[str, str]:
    """Variables that make the sandbox's clients trust the bundle at `path_inside` (as the sandbox sees it).

    OpenSSL-based tools (curl, git, Python's ssl, pip via requests' certifi unless told) read SSL_CERT_FILE or
    their own variable; Node and Bun (the CLI) keep their own root store and add NODE_EXTRA_CA_CERTS to it
    (the whole bundle is accepted: the system's roots in it are already there)."""
    return {
        "SSL_CERT_FILE": path_inside,
        "NODE_EXTRA_CA_CERTS": path_inside,
        "REQUESTS_CA_BUNDLE": path_inside,
        "CURL_CA_BUNDLE": path_inside,
        "GIT_SSL_CAINFO": path_inside,
        "PIP_CERT": path_inside,
        "AWS_CA_BUNDLE": path_inside,
        "DENO_CERT": path_inside,
    }
