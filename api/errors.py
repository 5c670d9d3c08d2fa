"""One error shape for every API answer: {"error": {"status", "code", "message", "fields"?}}."""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.db.models import ProtectedError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ServiceError(Exception):
    """A refused request that is the caller's to fix; REST answers it as `status`, WebSockets as an error frame."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class Conflict(ServiceError):
    status = 409
    code = "conflict"


logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)


def database_unavailable(exc: Exception) -> JsonResponse:
    """The answer while PostgreSQL restarts or fails over: nothing the client sent was wrong."""
    logger.warning("Answering 503: the database failed (%s: %s)", type(exc).__name__, exc)
    message = "The database is unavailable for a moment; retry in a few seconds."
    response = JsonResponse(error_body(503, "database_unavailable", message), status=503)
    response["Retry-After"] = "5"
    return response


def flatten_errors(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        return [
            line
            for key, value in detail.items()
            for line in flatten_errors(value, f"{prefix}{key}." if key != "non_field_errors" else prefix)
        ]
    if isinstance(detail, list):
        return [line for value in detail for line in flatten_errors(value, prefix)]
    return [f"{prefix.rstrip('.')}: {detail}" if prefix else str(detail)]


def error_body(status: int, code: str, message: str, fields: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """Every API error has one shape: {"error": {"status", "code", "message", "fields"?}}."""
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.status, exc.code, exc.message), status=exc.status)
    if isinstance(exc, DATABASE_ERRORS):
        return database_unavailable(exc)
    if isinstance(exc, ProtectedError):
        # verbose_name_plural is a lazy translation proxy, which str.join refuses.
        names = sorted({str(type(obj)._meta.verbose_name_plural) for obj in exc.protected_objects})
        message = f"It is still used by {', '.join(names)}; deprecate or deactivate it instead of deleting."
        return Response(error_body(409, "in_use", message), status=409)
    # Django's own exceptions become DRF's, so that their code and message are the same whatever
    # raised them: another tenant's object and a missing one must answer the very same 404 body.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = exc.detail if isinstance(exc, exceptions.APIException) else response.data
    fields = detail if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict) else None
    code = getattr(exc, "default_code", "error")
    response.data = error_body(response.status_code, code, "; ".join(flatten_errors(detail)), fields)
    return response


@csrf_exempt  # a POST to an unknown API path is a 404, not a CSRF failure
def api_not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """JSON 404 for any unknown /api/ path (malformed ids included), in the API's error shape."""
    return JsonResponse(error_body(404, "not_found", "Not found."), status=404)
