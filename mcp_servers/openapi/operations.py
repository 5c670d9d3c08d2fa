"""A document's operations as tools: one per path and method, with a name, a description and an input
schema the Anthropic API accepts, and what each argument maps back to in the HTTP request."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote

from mcp_servers.openapi.problems import OpenApiProblem, OperationSkipped
from mcp_servers.openapi.refs import Resolver

# A document of more operations is refused: each is a tool whose definition is sent with every model call
# of a run that uses the server, and reading them all is work done inside the request that saves it.
MAX_OPERATIONS = 500
# A tool's description is sent with every model call too; an operation's longer prose is cut.
MAX_DESCRIPTION = 1024
METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ARGUMENT_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
PATH_VARIABLE = re.compile(r"\{([^{}/]+)\}")


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


def operations(document: dict[str, Any]) -> list[Operation]:
    """One tool per path and method, in document order, with unique names."""
    return read_operations(document)[0]


def skipped_operations(document: dict[str, Any]) -> list[str]:
    """The operations left out of `operations()`, each as "METHOD /path: why"."""
    return read_operations(document)[1]


def read_operations(document: dict[str, Any]) -> tuple[list[Operation], list[str]]:
    """The operations that can be tools, and the others, each as "METHOD /path: why"."""
    paths = _check_shape(document)
    resolver = Resolver(document)
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
            except OperationSkipped as why:
                skipped.append(f"{where}: {why}")
                continue
            name = _unique(_tool_name(method, path, spec.get("operationId")), names)
            found.append(Operation(name=name, method=method.upper(), path=path, **draft))
    return found, skipped


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


def _draft(resolver: Resolver, where: str, path: str, shared: list[Any], spec: dict[str, Any]) -> dict[str, Any]:
    """An Operation's fields except name, method and path."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    parameters: list[Parameter] = []
    for declared in _declared_parameters(resolver, where, path, shared, spec.get("parameters") or []):
        name, location = declared["name"], declared["in"]
        if location == "header" and not HEADER_NAME.match(name):
            raise OperationSkipped(f"`{name}` is not a valid HTTP header name")
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
            raise OperationSkipped(f"its request body is {', '.join(content)}; only JSON request bodies are supported")
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
                    raise OperationSkipped(
                        "its parameters take both `body` and `request_body`, leaving no name for the body"
                    )
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
    resolver: Resolver, where: str, path: str, shared: list[Any], own: list[Any]
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
