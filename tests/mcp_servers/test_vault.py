"""Secrets are written, never read back: REST shows their names only, the database holds ciphertext, keys
rotate without losing a value, and a server's `${name}` headers are filled from the run's tokens, the
tenant's vault or (platform servers only) the platform's, never from another tenant's."""

import base64
import hashlib
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from mcp_servers import vault
from mcp_servers.models import McpServer, Secret
from mcp_servers.services import MissingSecret, resolved_headers
from tenants.models import Tenant
from tests.factories import McpServerFactory

pytestmark = pytest.mark.django_db

URL = "/api/tenants/acme/secrets"
VALUE = "s3cr3t-value"


@pytest.fixture(autouse=True)
def default_key(settings: Settings) -> Iterator[None]:
    """Every test starts with the key derived from SECRET_KEY, and leaves no cached keys behind."""
    settings.SECRETS_KEYS = []
    vault._keys.cache_clear()
    yield
    vault._keys.cache_clear()


def derived_key(secret_key: str) -> str:
    """The key the vault uses when SECRETS_KEYS is empty, as `vault.py` derives it."""
    return base64.urlsafe_b64encode(hashlib.sha256(f"secrets-vault:{secret_key}".encode()).digest()).decode()


def put(client: APIClient, name: str, value: str, url: str = URL):
    return client.put(f"{url}/{name}", {"value": value}, format="json")


# --- REST ------------------------------------------------------------------------------------------------


def test_a_secret_is_stored_encrypted_and_only_its_name_comes_back(api_client: APIClient, tenant: Tenant) -> None:
    stored = put(api_client, "api_token", VALUE)
    listed = api_client.get(URL)

    assert stored.status_code == 200, stored.content
    assert set(stored.json()) == {"name", "created_at", "updated_at"}
    assert stored.json()["name"] == "api_token"
    assert listed.status_code == 200 and [s["name"] for s in listed.json()] == ["api_token"]
    for response in (stored, listed):
        assert VALUE.encode() not in response.content
    secret = Secret.objects.get()
    ciphertext = bytes(secret.encrypted)
    assert secret.tenant_id == "acme"
    assert VALUE.encode() not in ciphertext and base64.b64encode(VALUE.encode()) not in ciphertext
    assert vault.reveal(secret) == VALUE


def test_putting_a_secret_again_replaces_its_value(api_client: APIClient, tenant: Tenant) -> None:
    put(api_client, "api_token", VALUE)
    first = bytes(Secret.objects.get().encrypted)

    again = put(api_client, "api_token", "the-new-value")

    assert again.status_code == 200 and again.json()["name"] == "api_token"
    secret = Secret.objects.get()
    assert bytes(secret.encrypted) != first
    assert vault.reveal(secret) == "the-new-value"
    assert b"the-new-value" not in again.content


def test_a_secret_is_deleted(api_client: APIClient, tenant: Tenant) -> None:
    put(api_client, "api_token", VALUE)
    put(api_client, "other", "x")

    deleted = api_client.delete(f"{URL}/api_token")
    again = api_client.delete(f"{URL}/api_token")

    assert deleted.status_code == 204
    assert again.status_code == 404
    assert [s["name"] for s in api_client.get(URL).json()] == ["other"]


def test_a_secret_value_is_never_readable_by_its_name(api_client: APIClient, tenant: Tenant) -> None:
    put(api_client, "api_token", VALUE)

    response = api_client.get(f"{URL}/api_token")

    assert response.status_code in (404, 405)
    assert VALUE.encode() not in response.content


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "value"), ({"value": ""}, "value"), ({"value": 42}, "value"), ({"value": "x", "name": "y"}, "name")],
)
def test_a_bad_value_is_refused(api_client: APIClient, tenant: Tenant, body: dict[str, object], field: str) -> None:
    response = api_client.put(f"{URL}/api_token", body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not Secret.objects.exists()


def test_a_bad_secret_name_is_not_a_route(api_client: APIClient, tenant: Tenant) -> None:
    assert put(api_client, "a" * 65, VALUE).status_code == 404
    assert put(api_client, "has space", VALUE).status_code == 404
    assert not Secret.objects.exists()


def test_another_tenants_secrets_are_out_of_reach(
    api_client: APIClient, other_api_client: APIClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    put(api_client, "api_token", VALUE)
    theirs = "/api/tenants/globex/secrets"

    refused = [
        other_api_client.get(URL),
        put(other_api_client, "api_token", "overwritten"),
        other_api_client.delete(f"{URL}/api_token"),
        other_api_client.delete(f"{theirs}/api_token"),
    ]
    their_list = other_api_client.get(theirs)

    assert [response.status_code for response in refused] == [404, 404, 404, 404]
    assert their_list.status_code == 200 and their_list.json() == []
    assert vault.reveal(Secret.objects.get()) == VALUE
    assert put(other_api_client, "api_token", "theirs", theirs).status_code == 200
    assert [s["name"] for s in api_client.get(URL).json()] == ["api_token"]
    assert {s.tenant_id: vault.reveal(s) for s in Secret.objects.all()} == {"acme": VALUE, "globex": "theirs"}


# --- Keys and rotation -----------------------------------------------------------------------------------


def test_without_configured_keys_the_key_is_derived_from_secret_key(settings: Settings, tenant: Tenant) -> None:
    secret = vault.store(tenant, "api_token", VALUE)

    assert Fernet(derived_key(settings.SECRET_KEY).encode()).decrypt(bytes(secret.encrypted)) == VALUE.encode()


def test_dropping_a_key_before_rotating_makes_its_secrets_unreadable(settings: Settings, tenant: Tenant) -> None:
    secret = vault.store(tenant, "api_token", VALUE)
    settings.SECRETS_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(vault.SecretUnreadable, match="'api_token' cannot be decrypted"):
        vault.reveal(secret)


def test_keys_rotate_without_losing_a_secret(settings: Settings, tenant: Tenant, other_tenant: Tenant) -> None:
    old_key, new_key = derived_key(settings.SECRET_KEY), Fernet.generate_key().decode()
    vault.store(tenant, "api_token", VALUE)
    vault.store(other_tenant, "api_token", "globex-value")
    vault.store(None, "platform_token", "platform-value")

    settings.SECRETS_KEYS = [new_key, old_key]
    readable_during = {s.name + str(s.tenant_id): vault.reveal(s) for s in Secret.objects.all()}
    rotated = vault.rotate()
    settings.SECRETS_KEYS = [new_key]
    readable_after = {s.name + str(s.tenant_id): vault.reveal(s) for s in Secret.objects.all()}

    expected = {"api_tokenacme": VALUE, "api_tokenglobex": "globex-value", "platform_tokenNone": "platform-value"}
    assert rotated == 3
    assert readable_during == readable_after == expected
    settings.SECRETS_KEYS = [old_key]
    for secret in Secret.objects.all():
        with pytest.raises(vault.SecretUnreadable):
            vault.reveal(secret)


def test_the_rotate_command_re_encrypts_under_the_first_key(
    settings: Settings, tenant: Tenant, capsys: pytest.CaptureFixture[str]
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SECRETS_KEYS = [old_key]
    vault.store(tenant, "api_token", VALUE)
    settings.SECRETS_KEYS = [new_key, old_key]

    call_command("rotate_secrets")

    assert "Re-encrypted 1 secrets" in capsys.readouterr().out
    assert Fernet(new_key.encode()).decrypt(bytes(Secret.objects.get().encrypted)) == VALUE.encode()


def test_new_secrets_are_encrypted_under_the_first_key(settings: Settings, tenant: Tenant) -> None:
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SECRETS_KEYS = [first, second]

    secret = vault.store(tenant, "api_token", VALUE)

    assert Fernet(first.encode()).decrypt(bytes(secret.encrypted)) == VALUE.encode()


def test_a_key_that_is_not_a_fernet_key_is_a_configuration_error(settings: Settings, tenant: Tenant) -> None:
    settings.SECRETS_KEYS = ["not-a-key"]

    with pytest.raises(ImproperlyConfigured, match="SECRETS_KEYS holds a key that is not a Fernet key"):
        vault.store(tenant, "api_token", VALUE)


# --- Filling in headers ------------------------------------------------------------------------------------


def tenant_server(tenant: Tenant, **headers: str) -> McpServer:
    return McpServerFactory(tenant=tenant, name="tools", http=True, headers=headers)


def platform_server(**headers: str) -> McpServer:
    return McpServerFactory(tenant=None, name="shared", http=True, headers=headers, all_tenants=True)


def test_headers_without_references_are_sent_as_they_are(tenant: Tenant) -> None:
    server = tenant_server(tenant, **{"X-Static": "literal", "X-Dollar": "$api_token and {api_token}"})

    assert resolved_headers(server, tenant, {}) == {"X-Static": "literal", "X-Dollar": "$api_token and {api_token}"}


def test_references_are_filled_from_the_run_first_then_the_vault(tenant: Tenant) -> None:
    server = tenant_server(
        tenant, Authorization="Bearer ${api_token}", **{"X-Both": "${api_token}:${user}", "X-Static": "literal"}
    )
    vault.store(tenant, "api_token", "from-vault")
    vault.store(tenant, "user", "vault-user")

    from_vault = resolved_headers(server, tenant, {})
    from_run = resolved_headers(server, tenant, {"api_token": "from-run", "unused": "x"})

    assert from_vault == {
        "Authorization": "Bearer from-vault",
        "X-Both": "from-vault:vault-user",
        "X-Static": "literal",
    }
    assert from_run == {"Authorization": "Bearer from-run", "X-Both": "from-run:vault-user", "X-Static": "literal"}


def test_a_missing_secret_is_named(tenant: Tenant) -> None:
    server = tenant_server(tenant, Authorization="Bearer ${api_token}", **{"X-Other": "${zeta} ${alpha}"})
    vault.store(tenant, "zeta", "z")

    with pytest.raises(MissingSecret, match=r"'tools' needs the secret\(s\) alpha, api_token: store them"):
        resolved_headers(server, tenant, {})


def test_another_tenants_secret_is_never_used(tenant: Tenant, other_tenant: Tenant) -> None:
    server = tenant_server(tenant, Authorization="Bearer ${api_token}")
    vault.store(other_tenant, "api_token", "globex-value")

    with pytest.raises(MissingSecret, match="api_token"):
        resolved_headers(server, tenant, {})


def test_a_tenants_server_never_gets_a_platform_secret(tenant: Tenant) -> None:
    server = tenant_server(tenant, Authorization="Bearer ${platform_token}")
    vault.store(None, "platform_token", "platform-value")

    with pytest.raises(MissingSecret, match="platform_token"):
        resolved_headers(server, tenant, {})


def test_a_platform_server_uses_the_run_then_the_tenants_vault_then_the_platforms(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    server = platform_server(Authorization="Bearer ${api_token}")
    vault.store(None, "api_token", "platform-value")
    vault.store(other_tenant, "api_token", "globex-value")

    from_platform = resolved_headers(server, tenant, {})
    vault.store(tenant, "api_token", "acme-value")
    from_tenant = resolved_headers(server, tenant, {})
    from_run = resolved_headers(server, tenant, {"api_token": "run-value"})

    assert from_platform == {"Authorization": "Bearer platform-value"}
    assert from_tenant == {"Authorization": "Bearer acme-value"}
    assert from_run == {"Authorization": "Bearer run-value"}
    assert resolved_headers(server, other_tenant, {}) == {"Authorization": "Bearer globex-value"}


def test_a_platform_server_without_any_value_names_the_missing_secret(tenant: Tenant, other_tenant: Tenant) -> None:
    server = platform_server(Authorization="Bearer ${api_token}")
    vault.store(other_tenant, "api_token", "globex-value")

    with pytest.raises(MissingSecret, match="'shared' needs the secret\\(s\\) api_token"):
        resolved_headers(server, tenant, {})
