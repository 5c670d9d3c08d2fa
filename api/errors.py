"""One error shape for every API answer: {"error": {"status", "code", "message", "fields"?}}."""

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.db.models import ProtectedError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views import csrf as django_csrf
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from api.parsers import too_large


class ServiceError(Exception):
    """A refused request that is the caller's to fix; REST answers it as `status`, WebSockets as an error frame."""

    status = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: int | None = None,
        fields: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after  # seconds, for a 429
        self.fields = fields  # the request's fields at fault, as a serializer names them
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def response(self) -> JsonResponse:
        """The refusal outside DRF (the SSE views), with its Retry-After when it has one."""
        answer = json_error(self.status, self.code, self.message, self.fields)
        if self.retry_after is not None:
            answer["Retry-After"] = str(self.retry_after)
        return answer


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


def json_error(status: int, code: str, message: str, fields: Any = None) -> JsonResponse:
    """An error answer in the one shape, outside DRF (plain Django views, middleware, error views)."""
    return JsonResponse(error_body(status, code, message, fields), status=status)


def api_exception_response(exc: exceptions.APIException) -> JsonResponse:
    """A DRF exception answered outside DRF (the SSE views), exactly as the exception handler would."""
    fields = exc.detail if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict) else None
    return json_error(exc.status_code, exc.default_code, "; ".join(flatten_errors(exc.detail)), fields)


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """Every API error has one shape: {"error": {"status", "code", "message", "fields"?}}."""
    if isinstance(exc, ServiceError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return Response(error_body(exc.status, exc.code, exc.message, exc.fields), status=exc.status, headers=headers)
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
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        exc = unsupported_media_type(context.get("request"))
    elif isinstance(exc, RequestDataTooBig):
        exc = too_large()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = exc.detail if isinstance(exc, exceptions.APIException) else response.data
    fields = detail if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict) else None
    code = getattr(exc, "default_code", "error")
    response.data = error_body(response.status_code, code, "; ".join(flatten_errors(detail)), fields)
    return response


BODY_FORMATS = {"application/json": "JSON", "multipart/form-data": "a multipart form"}


def unsupported_media_type(request: Any) -> exceptions.UnsupportedMediaType:
    """A 415 that names what this endpoint takes: JSON almost everywhere, a multipart form for uploads."""
    sent = getattr(request, "content_type", "") or "no Content-Type"
    taken = [parser.media_type for parser in getattr(request, "parsers", None) or ()] or ["application/json"]
    formats = " or ".join(BODY_FORMATS.get(media_type, media_type) for media_type in taken)
    return exceptions.UnsupportedMediaType(
        sent, f"Send the body as {formats}, with Content-Type: {' or '.join(taken)} (not {sent})."
    )


@csrf_exempt  # a POST to an unknown API path is a 404, not a CSRF failure
def api_not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """JSON 404 for any unknown /api/ path (malformed ids included), in the API's error shape."""
    return JsonResponse(error_body(404, "not_found", "Not found."), status=404)


# Django's own error pages, in the API's shape (config/urls.py installs them, and with DEBUG on, when
# Django answers with its debug pages instead, api.middleware.errors_in_json); the admin and the chat
# page keep their HTML.

PAGES_FOR_PEOPLE = ("/admin/", "/chat/")
PLAIN_ERRORS = {
    400: ("bad_request", "The request is malformed."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    500: ("server_error", "The server failed to answer; the error is logged."),
}


def for_people(request: HttpRequest) -> bool:
    """Whether the path is a page for people, whose errors are pages too."""
    return request.path.startswith(PAGES_FOR_PEOPLE)


def plain_error(status: int) -> JsonResponse:
    """The answer for a status that Django reached by itself (no view said more)."""
    code, message = PLAIN_ERRORS.get(status) or ("error", f"{HTTPStatus(status).phrase}.")
    return json_error(status, code, message)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    if for_people(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        error = too_large()
        return json_error(error.status_code, error.default_code, str(error.detail))
    return plain_error(400)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    if for_people(request):
        return defaults.permission_denied(request, exception)
    return plain_error(403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    if for_people(request):
        return defaults.page_not_found(request, exception)
    return plain_error(404)


def server_error(request: HttpRequest) -> HttpResponseBase:
    if for_people(request):
        return defaults.server_error(request)
    return plain_error(500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponseBase:
    """CSRF_FAILURE_VIEW: only cookie-authenticated (admin) forms meet CSRF; the API uses keys."""
    if for_people(request):
        return django_csrf.csrf_failure(request, reason)
    return json_error(403, "csrf_failed", f"Refused as a possible cross-site request forgery: {reason}")


def allow_methods(*methods: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For plain Django views of the API: other methods answer a JSON 405 (and CSRF never applies)."""
    allowed = ", ".join(methods)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        async def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                response = json_error(
                    405, "method_not_allowed", f'Method "{request.method}" not allowed; use {allowed}.'
                )
                response["Allow"] = allowed
                return response
            return await view(request, *args, **kwargs)

        checked.__doc__, checked.__name__ = view.__doc__, view.__name__
        return csrf_exempt(checked)

    return decorate
