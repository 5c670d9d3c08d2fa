"""Requests refused before any view: a NUL in the path or query string can reach no database."""

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from api.errors import json_error


def malformed(request: HttpRequest) -> HttpResponseBase | None:
    """The refusal of a request that no view could answer sensibly, or None."""
    query = unquote_to_bytes(request.META.get("QUERY_STRING", ""))
    if "\x00" in request.path or b"\x00" in query:
        return json_error(400, "bad_request", "The path and query string may not contain the NUL character (%00).")
    return None


@sync_and_async_middleware
def reject_malformed_requests(get_response: Any) -> Callable[[HttpRequest], Any]:
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponseBase:
            return malformed(request) or await get_response(request)

        return middleware

    def sync_middleware(request: HttpRequest) -> HttpResponseBase:
        return malformed(request) or get_response(request)

    return sync_middleware
