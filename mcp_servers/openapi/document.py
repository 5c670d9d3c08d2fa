"""Loading an uploaded document: JSON or YAML text to plain JSON data, bounded before anything walks it,
and checked to yield at least one tool."""

import json
import math
from datetime import date
from typing import Any

import yaml

from mcp_servers.openapi.operations import read_operations
from mcp_servers.openapi.problems import OpenApiProblem

# An upload is read and parsed inside the web request that saves the server (and a fetched one inside
# the save too): its size bounds the memory and time one request can spend on it.
MAX_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 100  # of the document as written
MAX_NODES = 500_000  # of the document after YAML aliases are expanded


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
    found, skipped = read_operations(document)
    if not found:
        reasons = "; ".join(skipped[:5]) or "`paths` lists no operations"
        raise OpenApiProblem(f"The document has no operation that can become a tool ({reasons}).")
    return document


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
