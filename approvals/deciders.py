"""Who a request decides as: the one rule every surface (REST, WebSocket) names its deciders by.

- An end user's chat session: that end user (`end_user`, their id).
- An API key, the tenant's or an admin's: the key (`api_key`), by its name and prefix, never its secret. With
  `X-User-ID` the key still decides, since the key is what authenticated the request and the tenant's backend
  vouches for its user; the name says for whom (`acme backend (ak_Xy12ab…) for alice`).
- Staff in the admin (or on the admin's WebSocket): the operator (`operator`, their username).
"""

from approvals.models import Decider
from approvals.services import Who
from tenants.auth import Principal
from tenants.models import ApiKey

MAX_NAME_CHARS = 200  # PersonRequest.decided_by


def key_decider(key: ApiKey, user_id: str = "") -> Who:
    """An API key deciding, for the end user `X-User-ID` names (if any)."""
    name = f"{key.name} ({key.prefix}…)"
    if user_id:
        name += f" for {user_id}"
    return Who(Decider.API_KEY, clipped(name))


def stream_token_decider(claims: dict[str, str]) -> Who:
    """Who a conversation socket opened with a stream token decides as: the chat session's end user, or the key
    that minted the token (a token minted before tokens named their key names none)."""
    user_id = claims.get("u", "")
    if claims.get("e") == "1":
        return Who(Decider.END_USER, user_id)
    key_id = claims.get("k", "")
    key = ApiKey.objects.filter(pk=int(key_id)).first() if key_id.isdigit() else None
    if key is not None:
        return key_decider(key, user_id)
    unnamed = f"API key #{key_id}" if key_id else "an API key's stream token"
    return Who(Decider.API_KEY, clipped(unnamed + (f" for {user_id}" if user_id else "")))


def request_decider(caller: Principal) -> Who:
    """Who a REST request decides as."""
    if caller.key is None:
        return Who(Decider.END_USER, caller.user_id)
    return key_decider(caller.key, caller.user_id)


def operator_decider(username: str) -> Who:
    return Who(Decider.OPERATOR, clipped(username))


def clipped(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"
