"""`$ref`s followed where a tool needs them: local ones only, cycles cut, the expansion bounded."""

from typing import Any
from urllib.parse import unquote

from mcp_servers.openapi.problems import OpenApiProblem, OperationSkipped

MAX_SCHEMA_DEPTH = 64  # of one tool's input schema once `$ref`s are expanded
MAX_SCHEMA_NODES = 20_000  # of one tool's input schema; bigger ones would swamp the model's context anyway
MAX_EXPANDED_NODES = 1_000_000  # of all tools together: bounds the work a hostile document can cause
# Inside a schema these hold data (which may contain a key named `$ref`), not subschemas.
DATA_KEYWORDS = frozenset({"example", "examples", "default", "enum", "const"})
# Inside a schema these map names to subschemas: their keys are names, never keywords.
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


class Resolver:
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
            raise OperationSkipped(
                f"its schemas nest more than {MAX_SCHEMA_DEPTH} levels deep once `$ref`s are expanded"
            )
        if self.nodes > MAX_SCHEMA_NODES:
            raise OperationSkipped(f"its input schema expands to more than {MAX_SCHEMA_NODES:,} values")
        if self.total > MAX_EXPANDED_NODES:
            raise OpenApiProblem(f"The document's schemas expand to more than {MAX_EXPANDED_NODES:,} values in all.")


def _recursion_stub(ref: str, target: Any) -> dict[str, Any]:
    stub: dict[str, Any] = {"description": f"A `{ref.rsplit('/', 1)[-1]}` again (the schema is recursive)."}
    if isinstance(target, dict) and isinstance(target.get("type"), str):
        stub["type"] = target["type"]
    return stub
