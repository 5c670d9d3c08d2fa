"""A tenant's "openapi" MCP server: an OpenAPI 3 document whose operations become tools, and the HTTP
requests those tools stand for. Pure functions: no network, no models.

Choices, in words for whoever reads a tenant's complaint:
- Only JSON request bodies (`application/json`, `application/*+json`). An operation whose body offers
  no JSON media type is left out, and `skipped_operations()` says why, so the upload can show it.
- Cookie parameters are not exposed (a secret cookie belongs in the server's configured headers).
- `$ref`s are followed where a tool needs them (parameters, request bodies and their schemas); one that
  points outside the document is refused. Responses are never read.
- Tool argument names must match `^[a-zA-Z0-9_.-]{1,64}$` (the Anthropic API refuses the whole request
  otherwise), so a parameter such as `filter[status]` is offered as `filter_status` and mapped back.
- A header the server config sets (`headers=` in `build_request`) wins over an argument of that name.
"""

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, NamedTuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import yaml

MAX_BYTES = 2 * 1024 * 1024
MAX_OPERATIONS = 500
MAX_DEPTH = 100  # of the document as written
MAX_NODES = 500_000  # of the document after YAML aliases are expanded
MAX_SCHEMA_DEPTH = 64  # of one tool's input schema once `$ref`s are expanded
MAX_SCHEMA_NODES = 20_000  # of one tool's input schema; bigger ones would swamp the model's context anyway
MAX_EXPANDED_NODES = 1_000_000  # of all tools together: bounds the work a hostile document can cause
MAX_DESCRIPTION = 1024
METHODS = ("get", "post", "put", "patch", "delete", "head", "options")

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ARGUMENT_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
PATH_VARIABLE = re.compile(r"\{([^{}/]+)\}")
# Characters a path template may keep as written; anything else in its literal parts is percent-encoded.
PATH_SAFE = "/!$&'()*+,;=:@%"
# Inside a schema these hold data (which may contain a key named `$ref`), not subschemas.
DATA_KEYWORDS = frozenset({"example", "examples", "default", "enum", "const"})
# Inside a schema these map names to subschemas: their keys are names, never keywords.
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


class OpenApiProblem(ValueError):
    """What to fix: in the document when it is loaded, in the arguments when a tool is called."""


class _Skipped(Exception):
    """Why one operation cannot be a tool; the rest of the document still can."""


class Parameter(NamedTuple):
    name: str  # as the API spells it
    location: Literal["path", "query", "header"]
    argument: str  # the tool argument that carries it: the name, made safe for tool schemas when it is not


@dataclass(frozen=True)
class Operation:
    name: str  # the tool's name
    method: str  # upper case
    path: str  # the template, e.g. /pets/{petId}
    description: str
    input_schema: dict[str, Any]
    parameters: list[Parameter]
    body: Literal["json"] | None = None
    media_type: str | None = None  # the Content-Type to send the body with
    body_argument: str | None = None  # the argument that holds the whole body (usually `body`), if not merged
    body_properties: list[str] | None = None  # the top-level arguments that make up the body, if merged
    body_required: bool = False


@dataclass(frozen=True)
class Request:
    method: str
    url: str  # without the query
    query: list[tuple[str, str]]
    headers: dict[str, str]
    json: Any = None  # the JSON body; None sends none


def load_document(raw: bytes | str) -> dict[str, Any]:
    """The OpenAPI 3 document in `raw` (JSON or YAML) as plain JSON data, checked to yield at least one tool."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_BYTES:
        raise OpenApiProblem(f"The document is {len(data):,} bytes; at most {MAX_BYTES:,} are accepted.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OpenApiProblem("The document is not UTF-8 text.") from None
    document = _plain(_parse(text))
    if not isinstance(document, dict):
        raise OpenApiProblem("The document must be an OpenAPI object (a mapping with `openapi`, `info`, `paths`).")
    found, skipped = _read(document)
    if not found:
        reasons = "; ".join(skipped[:5]) or "`paths` lists no operations"
        raise OpenApiProblem(f"The document has no operation that can become a tool ({reasons}).")
    return document


def operations(document: dict[str, Any]) -> list[Operation]:
    """One tool per path and method, in document order, with unique names."""
    return _read(document)[0]


def skipped_operations(document: dict[str, Any]) -> list[str]:
    """The operations left out of `operations()`, each as "METHOD /path: why"."""
    return _read(document)[1]


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


# Loading


def _parse(text: str) -> Any:
    json_error = None
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            json_error = exc  # YAML reads most JSON too (and some near-JSON); say the JSON error if it fails
        except RecursionError:
            raise OpenApiProblem(f"The document nests more than {MAX_DEPTH} levels deep.") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OpenApiProblem(
            f"The document is not valid {'JSON' if json_error else 'YAML'}: {json_error or exc}"
        ) from None
    except RecursionError:
        raise OpenApiProblem(f"The document nests more than {MAX_DEPTH} levels deep.") from None


def _plain(value: Any) -> Any:
    """A copy of parsed YAML as JSON data (string keys, ISO dates), bounded in depth and size.

    YAML aliases are shared, not copied, by the parser: a small file can stand for a huge (or cyclic)
    tree, which the bounds here stop before anything walks it.
    """
    count = 0

    def copy(node: Any, depth: int) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise OpenApiProblem(f"The document expands to more than {MAX_NODES:,} values (YAML aliases?).")
        if depth > MAX_DEPTH:
            raise OpenApiProblem(f"The document nests more than {MAX_DEPTH} levels deep (a cyclic YAML alias?).")
        if isinstance(node, dict):
            return {_key(key): copy(item, depth + 1) for key, item in node.items()}
        if isinstance(node, list | tuple):
            return [copy(item, depth + 1) for item in node]
        if isinstance(node, date):  # datetime included: YAML reads an unquoted 2024-01-01 as a date
            return node.isoformat()
        if isinstance(node, float) and not math.isfinite(node):
            raise OpenApiProblem("The document holds a NaN or infinite number, which JSON cannot store; quote it.")
        if node is None or isinstance(node, str | int | float):
            return node
        raise OpenApiProblem(f"The document holds a {type(node).__name__} value, which JSON cannot store.")

    return copy(value, 0)


def _key(key: Any) -> str:
    if isinstance(key, bool):  # YAML 1.1 reads keys such as `on:` and `yes:` as booleans
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, str | int | float):
        return str(key)
    raise OpenApiProblem(f"The document has a key {key!r} that is not a string.")


def _check_shape(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise OpenApiProblem("The document must be an OpenAPI object (a mapping with `openapi`, `info`, `paths`).")
    if "swagger" in document:
        raise OpenApiProblem(
            "This is a Swagger 2.0 document; convert it to OpenAPI 3 (e.g. with swagger2openapi or "
            "https://converter.swagger.io) and upload the result."
        )
    version = document.get("openapi")
    if version is None:
        raise OpenApiProblem("The document has no `openapi` field; an OpenAPI 3 document starts with `openapi: 3.0.3`.")
    if not str(version).startswith("3."):
        raise OpenApiProblem(f"`openapi: {version}` is not supported; upload an OpenAPI 3.x document.")
    paths = document.get("paths")
    if not isinstance(paths, dict):
        raise OpenApiProblem("The document needs a `paths` mapping of URL paths to their operations.")
    return paths


def _check_path(path: str) -> None:
    """Refuse templates that could leave the base URL's path or carry a query of their own."""
    if not path.startswith("/"):
        raise OpenApiProblem(f"The path `{path}` must start with `/`.")
    if any(char in path for char in "?#\\") or any(char.isspace() or ord(char) < 32 for char in path):
        raise OpenApiProblem(f"The path `{path}` may not contain `?`, `#`, `\\`, spaces or control characters.")
    if any(unquote(segment) in (".", "..") for segment in path.split("/")):
        raise OpenApiProblem(f"The path `{path}` may not contain `.` or `..` segments.")


# Reading operations


def _read(document: dict[str, Any]) -> tuple[list[Operation], list[str]]:
    paths = _check_shape(document)
    resolver = _Resolver(document)
    items: list[tuple[str, dict[str, Any]]] = []
    for path, raw_item in paths.items():
        if not isinstance(path, str):
            raise OpenApiProblem(f"The path {path!r} must be a string.")
        _check_path(path)
        item = resolver.follow(raw_item, f"The path item `{path}`")
        items.append((path, item))
    count = sum(method in item for _, item in items for method in METHODS)
    if count > MAX_OPERATIONS:
        raise OpenApiProblem(f"The document has {count} operations; at most {MAX_OPERATIONS} are accepted.")

    found: list[Operation] = []
    skipped: list[str] = []
    names: set[str] = set()
    for path, item in items:
        shared = item.get("parameters") or []
        for method in METHODS:
            spec = item.get(method)
            if spec is None:
                continue
            where = f"{method.upper()} {path}"
            if not isinstance(spec, dict):
                raise OpenApiProblem(f"{where} must be an operation object (a mapping).")
            resolver.start_operation()
            try:
                draft = _draft(resolver, where, path, shared, spec)
            except _Skipped as why:
                skipped.append(f"{where}: {why}")
                continue
            name = _unique(_tool_name(method, path, spec.get("operationId")), names)
            found.append(Operation(name=name, method=method.upper(), path=path, **draft))
    return found, skipped


def _draft(resolver: "_Resolver", where: str, path: str, shared: list[Any], spec: dict[str, Any]) -> dict[str, Any]:
    """An Operation's fields except name, method and path."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    parameters: list[Parameter] = []
    for declared in _declared_parameters(resolver, where, path, shared, spec.get("parameters") or []):
        name, location = declared["name"], declared["in"]
        if location == "header" and not HEADER_NAME.match(name):
            raise _Skipped(f"`{name}` is not a valid HTTP header name")
        argument = _unique(_argument_name(name), properties, alternative=f"{_argument_name(name)}_{location}")
        schema = resolver.schema(_parameter_schema(declared))
        schema = dict(schema) if isinstance(schema, dict) else {}
        description = declared.get("description") or schema.get("description")
        if argument != name:
            description = f"{location.capitalize()} parameter `{name}`." + (f" {description}" if description else "")
        if description:
            schema["description"] = description
        properties[argument] = schema
        if location == "path" or declared.get("required") is True:
            required.append(argument)
        parameters.append(Parameter(name, location, argument))

    body_fields: dict[str, Any] = {}
    if spec.get("requestBody") is not None:
        request_body = resolver.follow(spec["requestBody"], f"{where} requestBody")
        content = request_body.get("content") or {}
        media_type = _json_media_type(content)
        if content and media_type is None:
            raise _Skipped(f"its request body is {', '.join(content)}; only JSON request bodies are supported")
        if media_type is not None:
            body_required = request_body.get("required") is True
            media = content[media_type] if isinstance(content[media_type], dict) else {}
            schema = resolver.schema(media.get("schema") or {})
            if _mergeable(schema, properties):
                properties.update(schema["properties"])
                if body_required:
                    required.extend(name for name in schema.get("required") or [] if name in schema["properties"])
                body_fields = {"body_properties": list(schema["properties"])}
            else:
                body_argument = next((name for name in ("body", "request_body") if name not in properties), None)
                if body_argument is None:
                    raise _Skipped("its parameters take both `body` and `request_body`, leaving no name for the body")
                properties[body_argument] = schema if isinstance(schema, dict) else {}
                if body_required:
                    required.append(body_argument)
                body_fields = {"body_argument": body_argument}
            body_fields.update(body="json", media_type=media_type, body_required=body_required)

    return {
        "description": _description(spec, where),
        "input_schema": {
            "type": "object",
            "properties": properties,
            "required": list(dict.fromkeys(required)),
            "additionalProperties": False,
        },
        "parameters": parameters,
        **body_fields,
    }


def _declared_parameters(
    resolver: "_Resolver", where: str, path: str, shared: list[Any], own: list[Any]
) -> list[dict[str, Any]]:
    """Path-level then operation-level parameters, the latter overriding by name and location; each
    variable of the path template once, declared or not. Cookie parameters are left out."""
    if not isinstance(shared, list) or not isinstance(own, list):
        raise OpenApiProblem(f"{where}: `parameters` must be a list.")
    variables = PATH_VARIABLE.findall(path)
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in [*shared, *own]:
        declared = resolver.follow(raw, f"{where} parameters")
        name, location = declared.get("name"), declared.get("in")
        if not isinstance(name, str) or not name or location not in ("path", "query", "header", "cookie"):
            raise OpenApiProblem(f"{where}: each parameter needs a `name` and `in` (path, query, header or cookie).")
        if location == "cookie" or (location == "path" and name not in variables):
            continue
        by_key[(location, name.lower() if location == "header" else name)] = declared
    for variable in variables:
        by_key.setdefault(("path", variable), {"name": variable, "in": "path", "schema": {"type": "string"}})
    return list(by_key.values())


def _parameter_schema(declared: dict[str, Any]) -> Any:
    if "schema" in declared:
        return declared["schema"]
    content = declared.get("content")
    if isinstance(content, dict) and content:
        media = next(iter(content.values()))
        return media.get("schema", {}) if isinstance(media, dict) else {}
    return {}


def _json_media_type(content: Any) -> str | None:
    if not isinstance(content, dict):
        return None
    kinds = [media_type for media_type in content if _is_json(media_type)]
    exact = [media_type for media_type in kinds if media_type.split(";")[0].strip().lower() == "application/json"]
    return (exact or kinds or [None])[0]


def _is_json(media_type: str) -> bool:
    essence = media_type.split(";")[0].strip().lower()
    return essence == "application/json" or (essence.startswith("application/") and essence.endswith("+json"))


def _mergeable(schema: Any, taken: Mapping[str, Any]) -> bool:
    """Whether a body schema's properties can be the tool's own arguments without losing anything the
    agent must say: a plain object whose names are free and valid as argument names."""
    if not isinstance(schema, dict):
        return False
    properties = schema.get("properties")
    return (
        (schema.get("type") == "object" or ("type" not in schema and isinstance(properties, dict)))
        and isinstance(properties, dict)
        and bool(properties)
        and not any(keyword in schema for keyword in ("allOf", "anyOf", "oneOf", "not", "if"))
        and not isinstance(schema.get("additionalProperties"), dict)
        and all(ARGUMENT_NAME.match(name) and name not in taken for name in properties)
    )


def _description(spec: dict[str, Any], where: str) -> str:
    summary, description = (spec.get(key) for key in ("summary", "description"))
    summary = summary.strip() if isinstance(summary, str) else ""
    description = description.strip() if isinstance(description, str) else ""
    if summary and description.startswith(summary):
        summary = ""
    text = "\n\n".join(part for part in (summary, description) if part) or where
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def _tool_name(method: str, path: str, operation_id: Any) -> str:
    if isinstance(operation_id, str) and operation_id:
        if TOOL_NAME.match(operation_id[:64]):
            return operation_id[:64]
        if name := re.sub(r"[^a-zA-Z0-9_-]+", "_", operation_id).strip("_")[:64]:
            return name
    return re.sub(r"[^a-zA-Z0-9-]+", "_", f"{method}_{path}").strip("_")[:64]


def _argument_name(name: str) -> str:
    if ARGUMENT_NAME.match(name):
        return name
    return re.sub(r"[^a-zA-Z0-9_.-]+", "_", name).strip("_")[:64] or "argument"


def _unique(name: str, taken: set[str] | Mapping[str, Any], alternative: str | None = None) -> str:
    """`name`, else `alternative`, else `name` with the first free suffix `_2`, `_3`…, all within 64 characters.
    Adds the result to `taken` when it is a set."""
    candidates = [name] + ([alternative[:64]] if alternative else [])
    chosen = next((candidate for candidate in candidates if candidate not in taken), None)
    number = 2
    while chosen is None:
        suffix = f"_{number}"
        if (candidate := name[: 64 - len(suffix)] + suffix) not in taken:
            chosen = candidate
        number += 1
    if isinstance(taken, set):
        taken.add(chosen)
    return chosen


class _Resolver:
    """Local `$ref`s expanded into tool schemas, with cycles cut and the expansion bounded."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.nodes = 0  # in the current operation's schemas
        self.total = 0

    def start_operation(self) -> None:
        self.nodes = 0

    def lookup(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise OpenApiProblem(
                f"`$ref: {ref}` points outside this document; only local references such as "
                "`#/components/schemas/Pet` are supported. Bundle the document into one file first "
                "(e.g. with `redocly bundle`)."
            )
        pointer = ref[1:]
        if pointer and not pointer.startswith("/"):
            raise OpenApiProblem(f"`$ref: {ref}` must be a JSON pointer such as `#/components/schemas/Pet`.")
        node: Any = self.document
        for token in pointer.split("/")[1:]:
            token = unquote(token).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise OpenApiProblem(f"`$ref: {ref}` points at nothing in this document.")
        return node

    def follow(self, node: Any, where: str) -> dict[str, Any]:
        """A path item, parameter or request body object, its own `$ref`s followed (not its schemas')."""
        seen: list[str] = []
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in seen:
                raise OpenApiProblem(f"{where}: `$ref: {ref}` refers to itself.")
            seen.append(ref)
            siblings = {key: value for key, value in node.items() if key != "$ref"}
            target = self.lookup(ref)
            node = {**target, **siblings} if isinstance(target, dict) else target
        if not isinstance(node, dict):
            raise OpenApiProblem(f"{where} must be a mapping.")
        return node

    def schema(self, node: Any, trail: tuple[str, ...] = (), depth: int = 0) -> Any:
        """`node` with every `$ref` replaced by a copy of its target; a `$ref` already being expanded
        (a recursive schema) becomes a stub, and read-only properties are dropped (never sent)."""
        self._spend(depth)
        if isinstance(node, list):
            return [self.schema(item, trail, depth + 1) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            target = self.lookup(ref)
            if ref in trail:
                return _recursion_stub(ref, target)
            resolved = self.schema(target, (*trail, ref), depth + 1)
            siblings = {key: value for key, value in node.items() if key != "$ref"}
            if siblings and isinstance(resolved, dict):  # OpenAPI 3.1 lets `description` etc. sit beside a `$ref`
                return {**resolved, **self.schema(siblings, trail, depth + 1)}
            return resolved
        expanded: dict[str, Any] = {}
        for key, value in node.items():
            if key in DATA_KEYWORDS:
                expanded[key] = value
            elif key in SCHEMA_MAPS and isinstance(value, dict):
                expanded[key] = {name: self.schema(sub, trail, depth + 2) for name, sub in value.items()}
            else:
                expanded[key] = self.schema(value, trail, depth + 1)
        properties = expanded.get("properties")
        if isinstance(properties, dict):
            read_only = {
                name for name, sub in properties.items() if isinstance(sub, dict) and sub.get("readOnly") is True
            }
            if read_only:
                expanded["properties"] = {name: sub for name, sub in properties.items() if name not in read_only}
                if isinstance(expanded.get("required"), list):
                    expanded["required"] = [name for name in expanded["required"] if name not in read_only]
        return expanded

    def _spend(self, depth: int) -> None:
        self.nodes += 1
        self.total += 1
        if depth > MAX_SCHEMA_DEPTH:
            raise _Skipped(f"its schemas nest more than {MAX_SCHEMA_DEPTH} levels deep once `$ref`s are expanded")
        if self.nodes > MAX_SCHEMA_NODES:
            raise _Skipped(f"its input schema expands to more than {MAX_SCHEMA_NODES:,} values")
        if self.total > MAX_EXPANDED_NODES:
            raise OpenApiProblem(f"The document's schemas expand to more than {MAX_EXPANDED_NODES:,} values in all.")


def _recursion_stub(ref: str, target: Any) -> dict[str, Any]:
    stub: dict[str, Any] = {"description": f"A `{ref.rsplit('/', 1)[-1]}` again (the schema is recursive)."}
    if isinstance(target, dict) and isinstance(target.get("type"), str):
        stub["type"] = target["type"]
    return stub


# Building requests


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
