"""The chat page's session: an end user of one tenant, opened by a chat link (or by staff)."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request

from chat.links import ChatGrant
from tenants.auth import Principal

SESSION_KEY = "chat"


def start_session(request: HttpRequest, grant: ChatGrant) -> None:
    request.session.cycle_key()  # a new session id: nothing of an earlier visitor carries over
    request.session[SESSION_KEY] = {"t": grant.tenant_id, "u": grant.user_id, "c": grant.conversation_id}


def session_grant(request: HttpRequest) -> ChatGrant | None:
    claims = request.session.get(SESSION_KEY)
    if not isinstance(claims, dict):
        return None
    return ChatGrant(claims["t"], claims["u"], claims.get("c"))


class ChatSessionAuthentication(SessionAuthentication):
    """API requests from the chat page: the session's user in the session's tenant, never anyone else.

    Only when no API key was sent; unsafe methods need the CSRF token, as any cookie session does.
    """

    def authenticate(self, request: Request) -> tuple[Principal, None] | None:
        grant = session_grant(request._request)
        if grant is None:
            return None
        self.enforce_csrf(request)  # DRF's check for cookie sessions
        return Principal(user_id=grant.user_id, session_tenant_id=grant.tenant_id), None


class ChatSessionScheme(OpenApiAuthenticationExtension):
    """Describes the chat page's session in the OpenAPI schema (a cookie, plus X-CSRFToken on writes)."""

    target_class = ChatSessionAuthentication
    name = "ChatSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "The chat page's session of one end user, opened by a chat link; writes need X-CSRFToken.",
        }
