"""Who is calling: API keys for REST and SSE, signed stream tokens for WebSockets."""

import unicodedata
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.core import signing
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from tenants.models import ApiKey, Tenant, hash_key

USER_ID_MAX_LENGTH = 200
Rows = TypeVar("Rows", bound=QuerySet[Any])
STREAM_TOKEN_SALT = "conversations.stream-token"  # noqa: S105 - a signing namespace, not a secret


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, seen through what it may reach: an API key (and the end user its
    `X-User-ID` names), or an end user's chat session, which reaches one tenant as one user."""

    key: ApiKey | None = None
    user_id: str = ""
    session_tenant_id: str | None = None

    is_authenticated = True

    @property
    def is_admin(self) -> bool:
        return self.key is not None and self.key.is_admin

    @property
    def tenant_id(self) -> str | None:
        return self.key.tenant_id if self.key is not None else self.session_tenant_id

    def tenant(self, tenant_id: str) -> Tenant:
        """The tenant named in a URL, or 404 when this key may not see it (exactly like a missing one)."""
        if not self.is_admin and tenant_id != self.tenant_id:
            raise Http404
        try:
            return Tenant.objects.select_related("default_model").get(pk=tenant_id)
        except Tenant.DoesNotExist:
            raise Http404 from None

    def narrow(self, rows: Rows, user_field: str = "user_id") -> Rows:
        """With `X-User-ID`, only that end user's rows exist (its conversations, runs, usage); without, all."""
        return rows.filter(**{user_field: self.user_id}) if self.user_id else rows


def raw_key_from_headers(headers: Any) -> str:
    """The API key from `X-API-Key` or `Authorization: Bearer`, or "" when neither is present."""
    raw = headers.get("X-API-Key") or ""
    if not raw:
        scheme, _, credentials = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer":
            raw = credentials
    return raw.strip()


def user_id_problem(user_id: str) -> str | None:
    """Why `user_id` cannot name an end user, or None when it can: the one rule for headers, bodies and paths."""
    if len(user_id) > USER_ID_MAX_LENGTH:
        return f"Use at most {USER_ID_MAX_LENGTH} characters."
    # A tab, a line break or an escape in a user id splits log lines and report rows, and two ids that
    # look the same on screen would be two users for budgets.
    if any(unicodedata.category(character) == "Cc" for character in user_id):
        return "A user id may not contain control characters (tabs, line breaks, NUL, escapes); send plain text."
    return None


def validate_user_id(user_id: str) -> None:
    """A serializer validator: a 400 that says what to fix when `user_id` cannot name an end user."""
    if problem := user_id_problem(user_id):
        raise exceptions.ValidationError(problem)


def user_id_from_headers(headers: Any) -> str:
    """The end user `X-User-ID` names ("" without one), read as UTF-8.

    WSGI and ASGI servers hand header values over as latin-1 (each byte one character), while clients
    send UTF-8: read as given, `zoë` would be stored as `zoÃ«`, another user for budgets and reports.
    """
    raw = headers.get("X-User-ID") or ""
    try:
        user_id = raw.encode("latin-1").decode("utf-8").strip()
    except UnicodeError:
        raise exceptions.ValidationError({"X-User-ID": ["Send the user id as UTF-8 text."]}) from None
    if problem := user_id_problem(user_id):
        raise exceptions.ValidationError({"X-User-ID": [problem]})
    return user_id


def authenticate_headers(headers: Any) -> Principal | None:
    """Resolve request headers to a Principal; None when no key was sent."""
    raw = raw_key_from_headers(headers)
    if not raw:
        return None
    key = ApiKey.objects.select_related("tenant").filter(key_hash=hash_key(raw)).first()
    if key is None or key.is_revoked:
        raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
    key.touch()
    return Principal(key=key, user_id=user_id_from_headers(headers))


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Principal, ApiKey | None] | None:
        principal = authenticate_headers(request.headers)
        return None if principal is None else (principal, principal.key)

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when the key is missing or wrong.
        return 'Bearer realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the API key in the OpenAPI schema, so that the docs page can send it."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "A tenant or admin API key; `Authorization: Bearer <key>` works too.",
        }


def _stream_signer() -> signing.TimestampSigner:
    # "." keeps the token valid as a WebSocket subprotocol name, where ":" is not allowed.
    return signing.TimestampSigner(salt=STREAM_TOKEN_SALT, sep=".")


def make_stream_token(
    conversation_id: str, tenant_id: str, user_id: str = "", *, end_user: bool = False, key_id: int | None = None
) -> str:
    """A short-lived token that opens one conversation's WebSocket (browsers cannot send headers).

    `end_user`: minted for an end user's own chat session, whose socket may then name only the agents its chat
    page offers (as its REST requests may). `key_id`: the API key that minted it, whom the socket's decisions
    (approvals, answers) name, as that key's REST requests would; its id only, never anything of the secret."""
    claims = {"c": conversation_id, "t": tenant_id, "u": user_id}
    if end_user:
        claims["e"] = "1"
    if key_id is not None:
        claims["k"] = str(key_id)
    return _stream_signer().sign_object(claims)


def read_stream_token(token: str) -> dict[str, str] | None:
    """The token's claims, or None when it is forged, malformed or older than its max age."""
    try:
        claims = _stream_signer().unsign_object(token, max_age=settings.STREAM_TOKEN_MAX_AGE_SECONDS)
    except (signing.BadSignature, ValueError):
        return None
    return claims if isinstance(claims, dict) else None
