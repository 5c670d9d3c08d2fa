"""The secrets vault: values encrypted at rest with Fernet (AES-128-CBC and HMAC-SHA256, from the
`cryptography` package), under keys an operator can rotate.

`SECRETS_KEYS` lists Fernet keys, newest first: the first encrypts, every one decrypts, so a new key
goes first and `manage.py rotate_secrets` re-encrypts every secret under it before the old key is
dropped. Without it, one key is derived from SECRET_KEY (development; production sets its own).
"""

import base64
import hashlib
import json
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from mcp_servers.models import Secret
from tenants.models import Tenant


class SecretUnreadable(Exception):
    """A stored secret that no configured key opens (a key was dropped before rotating)."""


@cache
def _keys(configured: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not configured:
        derived = hashlib.sha256(f"secrets-vault:{secret_key}".encode()).digest()
        configured = (base64.urlsafe_b64encode(derived).decode(),)
    try:
        return MultiFernet([Fernet(key) for key in configured])
    except ValueError as exc:
        raise ImproperlyConfigured(f"SECRETS_KEYS holds a key that is not a Fernet key ({exc}).") from None


def keys() -> MultiFernet:
    return _keys(tuple(settings.SECRETS_KEYS), settings.SECRET_KEY)


def store(tenant: Tenant | None, name: str, value: str) -> Secret:
    """Create or replace a secret; its value is never readable through the API or the admin again."""
    encrypted = keys().encrypt(value.encode())
    secret, _ = Secret.objects.update_or_create(tenant=tenant, name=name, defaults={"encrypted": encrypted})
    return secret


def reveal(secret: Secret) -> str:
    """The secret's value, for the gateway or the worker to send where its server says; never to a caller."""
    try:
        return keys().decrypt(bytes(secret.encrypted)).decode()
    except InvalidToken:
        raise SecretUnreadable(
            f"Secret {secret.name!r} cannot be decrypted with SECRETS_KEYS; was its key dropped before rotating?"
        ) from None


def seal(values: dict[str, str]) -> bytes:
    """Values kept for a while (a message's MCP tokens, until its run ends), encrypted like secrets."""
    return keys().encrypt(json.dumps(values).encode())


def unseal(sealed: bytes) -> dict[str, str]:
    try:
        values: dict[str, str] = json.loads(keys().decrypt(sealed))
    except InvalidToken:
        raise SecretUnreadable("The run's MCP tokens cannot be decrypted with SECRETS_KEYS.") from None
    return values


def rotate() -> int:
    """Re-encrypt every secret under the first key; returns how many."""
    fernet, count = keys(), 0
    for secret in Secret.objects.all().iterator():
        Secret.objects.filter(pk=secret.pk).update(encrypted=fernet.rotate(bytes(secret.encrypted)))
        count += 1
    return count
