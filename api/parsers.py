"""Request bodies: JSON only, bounded, and nothing in them that PostgreSQL or the renderer would choke on."""

import json
from collections.abc import Mapping
from typing import IO, Any, Protocol

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import BaseParser


class BodyTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "request_too_large"
    default_detail = "The body is too large."


def too_large() -> BodyTooLarge:
    return BodyTooLarge(f"The body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes; send less.")


def load_json(body: bytes) -> Any:
    """A JSON document, or a ParseError that says what to fix (a 400 in the API's error shape)."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise exceptions.ParseError("The JSON is nested too deeply.") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise exceptions.ParseError(f"The body is not valid JSON: {exc}.") from None
    if _holds_nul(document):
        raise exceptions.ParseError(r"Strings may not contain the NUL character (\u0000).")
    return document


def _holds_nul(document: Any) -> bool:
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, Mapping):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def read_bounded(stream: Readable) -> bytes:
    """The whole body, refused past DATA_UPLOAD_MAX_MEMORY_SIZE (with or without a Content-Length)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise too_large()
    return body


class JSONParser(BaseParser):
    """The API's only parser: a body that is not `application/json` answers 415, saying what to send."""

    media_type = "application/json"

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        return load_json(read_bounded(stream))


def is_json(content_type: str) -> bool:
    """Whether a Content-Type says JSON (`application/json`, with or without parameters)."""
    return content_type.split(";")[0].strip().lower() == "application/json"
