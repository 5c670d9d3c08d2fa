"""Requests refused before any view (a NUL in the path or query string can reach no database), and error
answers that Django makes itself kept in the API's one error shape."""

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from api.errors import for_people, json_error, plain_error


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


def in_json(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """An error answer that is not JSON, outside the pages for people, in the one error shape instead.

    With DEBUG on (the embedded default), Django answers a path no route matches (`/api`, `/API/…`) and
    a crash with its HTML debug pages, and handler404/handler500 are not consulted; the traceback is
    in the log all the same.
    """
    if response.status_code < 400 or for_people(request):
        return response
    if response.get("Content-Type", "").startswith("application/json"):
        return response
    answer = plain_error(response.status_code)
    if "Allow" in response:
        answer["Allow"] = response["Allow"]
    return answer


@sync_and_async_middleware
def errors_in_json(get_response: Any) -> Callable[[HttpRequest], Any]:
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponseBase:
            return in_json(request, await get_response(request))

        return middleware

    def sync_middleware(request: HttpRequest) -> HttpResponseBase:
        return in_json(request, get_response(request))

    return sync_middleware
