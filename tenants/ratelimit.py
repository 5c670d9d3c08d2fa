"""Rate limits per tenant and per end user, shared by every web process through Redis.

Fixed one-minute windows counted with one atomic INCR per request (and an expiry), so two web
processes see one count: a request past the limit is refused with 429 and `Retry-After` (the
seconds until the window ends). Without Redis (the embedded defaults) each process counts on its
own. When Redis is away, requests are let through and a warning is logged: a limiter must not
take the API down with it.
"""

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from tenants.auth import Principal
from tenants.models import Tenant

if TYPE_CHECKING:  # DRF reads this module while rest_framework.views is still being imported
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
_clients: dict[str, redis.Redis] = {}
_client_lock = threading.Lock()
_local_counts: dict[str, int] = {}
_last_warning = 0.0


@dataclass(frozen=True)
class Limit:
    scope: str  # what is counted, e.g. "api:tenant:acme" or "runs:user:acme:alice"
    per_minute: int
    what: str  # in words, for the refusal


class RateLimited(exceptions.Throttled):
    """429 with Retry-After, in the API's one error shape."""

    default_code = "rate_limited"

    def __init__(self, limit: Limit, wait: int) -> None:
        self.retry_after = wait
        super().__init__(
            wait=wait,
            detail=f"{limit.what} is limited to {limit.per_minute} per minute; try again in {wait} s.",
        )


def check(limits: list[Limit]) -> None:
    """Count this request against each limit; RateLimited for the first one it passes."""
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    wait = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
    for limit in limits:
        if _count(f"ratelimit:{limit.scope}:{window}") > limit.per_minute:
            raise RateLimited(limit, wait)


def api_limits(principal: Principal, tenant: Tenant) -> list[Limit]:
    return _limits(
        "api",
        "API requests",
        principal.user_id,
        tenant,
        tenant.api_requests_per_minute,
        tenant.user_api_requests_per_minute,
    )


def run_limits(tenant: Tenant, user_id: str) -> list[Limit]:
    return _limits("runs", "Starting runs", user_id, tenant, tenant.runs_per_minute, tenant.user_runs_per_minute)


def _limits(
    kind: str, what: str, user_id: str, tenant: Tenant, per_tenant: int | None, per_user: int | None
) -> list[Limit]:
    limits = []
    if per_tenant is not None:
        limits.append(Limit(f"{kind}:tenant:{tenant.pk}", per_tenant, f"{what} for tenant {tenant.pk!r}"))
    if per_user is not None and user_id:
        limits.append(Limit(f"{kind}:user:{tenant.pk}:{user_id}", per_user, f"{what} for each end user"))
    return limits


class TenantRateThrottle(BaseThrottle):
    """The API as a whole, per tenant and per end user (admin keys that act for no tenant are not limited)."""

    def allow_request(self, request: Request, view: "APIView") -> bool:
        principal = request.user
        if not isinstance(principal, Principal) or principal.tenant_id is None:
            return True
        tenant = principal.key.tenant if principal.key is not None else _tenant(principal.tenant_id)
        if tenant is not None:
            check(api_limits(principal, tenant))
        return True


def _tenant(tenant_id: str) -> Tenant | None:
    return Tenant.objects.filter(pk=tenant_id).first()


def _count(key: str) -> int:
    client = _redis()
    if client is None:
        with _client_lock:
            _local_counts[key] = _local_counts.get(key, 0) + 1
            if len(_local_counts) > 10_000:  # old windows
                _local_counts.clear()
                _local_counts[key] = 1
            return _local_counts[key]
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS * 2)
            count, _ = pipe.execute()
        return int(count)
    except redis.RedisError as exc:
        _warn(exc)
        return 0


def _redis() -> Any:
    url = settings.REDIS_URL
    if not url:
        return None
    with _client_lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(
                url, socket_connect_timeout=0.5, socket_timeout=0.5, health_check_interval=30
            )
        return _clients[url]


def _warn(exc: Exception) -> None:
    global _last_warning
    if time.monotonic() - _last_warning > 30:
        _last_warning = time.monotonic()
        logger.warning("Rate limits are not enforced while Redis is unavailable (%s: %s)", type(exc).__name__, exc)
