"""API keys are stored hashed and resolve to a Principal; stream tokens are signed, scoped and short-lived."""

from datetime import timedelta

import pytest
from django.http import Http404
from django.utils import timezone
from pytest_django.fixtures import Settings
from rest_framework import exceptions

from tenants.auth import authenticate_headers, make_stream_token, read_stream_token
from tenants.models import ApiKey, Tenant, hash_key


def test_a_key_is_stored_only_as_its_hash(tenant: Tenant) -> None:
    key, raw_key = ApiKey.issue("ci", tenant=tenant)

    stored = ApiKey.objects.get(pk=key.pk)

    assert stored.key_hash == hash_key(raw_key) != raw_key
    assert raw_key.startswith(stored.prefix)
    assert not ApiKey.objects.filter(key_hash=raw_key).exists()


def test_headers_resolve_to_the_keys_tenant_and_end_user(tenant: Tenant) -> None:
    _, raw_key = ApiKey.issue("ci", tenant=tenant)

    principal = authenticate_headers({"X-API-Key": raw_key, "X-User-ID": " alice "})

    assert principal is not None
    assert (principal.tenant_id, principal.user_id, principal.is_admin) == ("acme", "alice", False)


def test_no_key_in_the_headers_is_no_principal(db: None) -> None:
    assert authenticate_headers({"X-User-ID": "alice"}) is None


def test_a_revoked_key_fails_authentication(tenant: Tenant) -> None:
    key, raw_key = ApiKey.issue("ci", tenant=tenant)
    key.revoke()

    with pytest.raises(exceptions.AuthenticationFailed):
        authenticate_headers({"X-API-Key": raw_key})


def test_use_is_recorded_at_most_once_a_minute(tenant: Tenant) -> None:
    key, raw_key = ApiKey.issue("ci", tenant=tenant)
    authenticate_headers({"X-API-Key": raw_key})
    first_use = ApiKey.objects.get(pk=key.pk).last_used_at

    authenticate_headers({"X-API-Key": raw_key})
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    authenticate_headers({"X-API-Key": raw_key})

    assert first_use is not None
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first_use


def test_a_tenant_principal_reaches_only_its_own_tenant(tenant: Tenant, other_tenant: Tenant) -> None:
    _, raw_key = ApiKey.issue("ci", tenant=tenant)
    principal = authenticate_headers({"X-API-Key": raw_key})
    assert principal is not None

    assert principal.tenant("acme") == tenant
    with pytest.raises(Http404):
        principal.tenant("globex")
    with pytest.raises(Http404):
        principal.tenant("initech")


def test_an_admin_principal_reaches_every_tenant_but_not_a_missing_one(tenant: Tenant, other_tenant: Tenant) -> None:
    _, raw_key = ApiKey.issue("platform")
    principal = authenticate_headers({"Authorization": f"Bearer {raw_key}"})
    assert principal is not None and principal.is_admin

    assert principal.tenant("globex") == other_tenant
    with pytest.raises(Http404):
        principal.tenant("initech")


def test_a_stream_token_carries_its_claims(db: None) -> None:
    token = make_stream_token("c-1", "acme", "alice")

    assert read_stream_token(token) == {"c": "c-1", "t": "acme", "u": "alice"}
    # Usable as a WebSocket subprotocol name, which may not contain ":" or "," or spaces.
    assert not set(token) & set(':, "')


def test_a_changed_stream_token_is_refused(db: None) -> None:
    token = make_stream_token("c-1", "acme")
    payload, timestamp, signature = token.rsplit(".", 2)
    other_payload = make_stream_token("c-2", "globex").rsplit(".", 2)[0]

    assert read_stream_token(f"{other_payload}.{timestamp}.{signature}") is None
    assert read_stream_token(f"{payload}.{timestamp}.{signature[::-1]}") is None
    assert read_stream_token("") is None


def test_an_old_stream_token_is_refused(settings: Settings) -> None:
    token = make_stream_token("c-1", "acme")

    settings.STREAM_TOKEN_MAX_AGE_SECONDS = -1  # every token is now too old

    assert read_stream_token(token) is None
