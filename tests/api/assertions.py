"""What every refused API request must look like, and proof that it left nothing behind."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.http import HttpResponse

from conversations.models import Conversation, Event, Run


def error_of(response: HttpResponse, status: int) -> dict[str, Any]:
    """The response's error object, after checking the status and the one error shape of the API."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"status", "code", "message"} <= set(error) <= {"status", "code", "message", "fields"}, error
    assert error["status"] == status
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def row_counts() -> tuple[int, int, int]:
    return Conversation.objects.count(), Run.objects.count(), Event.objects.count()


@contextmanager
def nothing_created() -> Iterator[None]:
    """Asserts that the block created no conversation, run or event (a refusal is all or nothing)."""
    before = row_counts()
    yield
    assert row_counts() == before
