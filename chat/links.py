"""Chat links: short-lived, signed URLs that open the chat page for one end user of one tenant.

A tenant's backend asks for one with its API key; the link carries no key, only what it grants.
"""

from dataclasses import dataclass
from typing import Any

from django.core import signing

LINK_SALT = "chat.link"


@dataclass(frozen=True)
class ChatGrant:
    tenant_id: str
    user_id: str
    conversation_id: str | None = None  # a link may open one conversation only


def make_link_token(grant: ChatGrant, expires_in: int) -> str:
    claims: dict[str, Any] = {"t": grant.tenant_id, "u": grant.user_id, "e": expires_in}
    if grant.conversation_id:
        claims["c"] = grant.conversation_id
    return signing.TimestampSigner(salt=LINK_SALT).sign_object(claims)


def read_link_token(token: str) -> ChatGrant | None:
    """The grant of a link, or None when it is tampered with, malformed or expired."""
    signer = signing.TimestampSigner(salt=LINK_SALT)
    try:
        claims = signer.unsign_object(token)
        # The expiry is the link's own, signed with it: check it against the signing time.
        signer.unsign_object(token, max_age=int(claims["e"]))
        return ChatGrant(str(claims["t"]), str(claims["u"]), claims.get("c"))
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None
