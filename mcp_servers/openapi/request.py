"""A tool call as the HTTP request it stands for, always under the server's base URL."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from mcp_servers.openapi.operations import PATH_VARIABLE, Operation
from mcp_servers.openapi.problems import OpenApiProblem

# Characters a path template may keep as written; anything else in its literal parts is percent-encoded.
PATH_SAFE = "/!$&'()*+,;=:@%"


@dataclass(frozen=True)
class Request:
    method: str
    url: str  # without the query
    query: list[tuple[str, str]]
    headers: dict[str, str]
    json: Any = None  # the JSON body; None sends none


def build_request(
    operation: Operation,
    base_url: str,
    arguments: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
) -> Request:
    """The HTTP request a tool call stands for, under `base_url` whatever the arguments say.

    `headers` are the server config's own (secrets included): they replace an argument for a header
    of the same name, compared case-insensitively, so the agent cannot swap the configured credential.
    """
    if not isinstance(arguments, Mapping):
        raise OpenApiProblem("The arguments must be an object.")
    properties = operation.input_schema["properties"]
    unknown = [name for name in arguments if name not in properties]
    if unknown:
        takes = ", ".join(f"`{name}`" for name in properties) or "no arguments"
        raise OpenApiProblem(f"Unknown argument(s) {_listed(unknown)}; `{operation.name}` takes {takes}.")
    missing = [name for name in operation.input_schema["required"] if arguments.get(name) is None]
    if missing:
        raise OpenApiProblem(f"Missing required argument(s) {_listed(missing)}.")

    url = _url_under(base_url, _filled_path(operation, arguments))
    query: list[tuple[str, str]] = []
    request_headers: dict[str, str] = {}
    for parameter in operation.parameters:
        value = arguments.get(parameter.argument)
        if value is None or parameter.location == "path":
            continue
        if parameter.location == "query":
            values = value if isinstance(value, list) else [value]
            query.extend((parameter.name, _text(parameter.argument, item)) for item in values if item is not None)
        else:
            request_headers[parameter.name] = _header_value(parameter.argument, value)

    body = _body(operation, arguments)
    if body is not None and operation.media_type and not _has_header(request_headers, "Content-Type"):
        request_headers["Content-Type"] = operation.media_type
    for name, value in (headers or {}).items():
        request_headers = {key: v for key, v in request_headers.items() if key.lower() != name.lower()}
        request_headers[name] = value
    return Request(operation.method, url, query, request_headers, body)


def _filled_path(operation: Operation, arguments: Mapping[str, Any]) -> str:
    argument_of = {p.name: p.argument for p in operation.parameters if p.location == "path"}
    pieces = PATH_VARIABLE.split(operation.path)  # literal, variable, literal, …
    filled = []
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            filled.append(quote(piece, safe=PATH_SAFE))
        else:
            filled.append(_path_value(argument_of[piece], arguments[argument_of[piece]]))
    return "".join(filled)


def _path_value(argument: str, value: Any) -> str:
    # Every `/` (and `%`, `?`, `#`) is encoded, so a value stays within its segment; `.` and `..` are
    # not encoded by quote() yet would climb out of the base path once the URL is normalised.
    values = value if isinstance(value, list) else [value]
    texts = [_text(argument, item) for item in values]
    if any(text in ("", ".", "..") for text in texts):
        raise OpenApiProblem(f"`{argument}` fills a segment of the URL path, so it cannot be empty, `.` or `..`.")
    return ",".join(quote(text, safe="") for text in texts)


def _url_under(base_url: str, path: str) -> str:
    base = urlsplit(base_url)
    if base.scheme not in ("http", "https") or not base.hostname:
        raise OpenApiProblem(
            f"The base URL `{base_url}` must be an absolute http(s) URL, e.g. https://api.example.com/v1."
        )
    if base.query or base.fragment:
        raise OpenApiProblem(f"The base URL `{base_url}` must not have a query or fragment.")
    prefix = base.path.rstrip("/")
    url = urlunsplit((base.scheme, base.netloc, prefix + path, "", ""))
    joined = urlsplit(url)
    # A belt to _check_path's braces: nothing in the operation or the arguments moves the request elsewhere.
    if (joined.scheme, joined.netloc) != (base.scheme, base.netloc) or not joined.path.startswith(prefix + "/"):
        raise OpenApiProblem(f"The request would leave the base URL `{base_url}`.")
    return url


def _text(argument: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise OpenApiProblem(
        f"`{argument}` must be a string, number or boolean (or a list of them where the schema says array)."
    )


def _header_value(argument: str, value: Any) -> str:
    text = ",".join(_text(argument, item) for item in value) if isinstance(value, list) else _text(argument, value)
    if any(char in text for char in "\r\n\0"):
        raise OpenApiProblem(f"`{argument}` is sent as a header, so it cannot contain line breaks.")
    return text


def _has_header(headers: Mapping[str, str], name: str) -> bool:
    return any(key.lower() == name.lower() for key in headers)


def _body(operation: Operation, arguments: Mapping[str, Any]) -> Any:
    if operation.body is None:
        return None
    if operation.body_argument is not None:
        return arguments.get(operation.body_argument)
    fields = {name: arguments[name] for name in operation.body_properties or [] if name in arguments}
    return fields if fields or operation.body_required else None


def _listed(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)
