"""The platform's own tools, served in the worker as an in-process MCP server (kind `builtin`).

`list_files` shows the conversation's /workspace; `present_files` hands files to the user: they are
saved at once and marked presented (`file.presented` events; `presented` in the files API).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from claude_agent_sdk import McpSdkServerConfig, create_sdk_mcp_server, tool

from conversations.events import EventItem
from workspaces.services import RunWorkspace
from workspaces.sync import valid_path

# A listing is a tool result the model reads in full: past this, it costs tokens without helping.
MAX_LISTED = 1000
TOOL_DESCRIPTIONS = {
    "list_files": "List the files in /workspace (the conversation's files): path and size, at most 1,000.",
    "present_files": (
        "Hand files in /workspace to the user: they see them as the answer's files. Paths are relative to /workspace."
    ),
}


def builtin_server(
    name: str, workspace: RunWorkspace, emit: Callable[[EventItem], None], allowed: list[str]
) -> McpSdkServerConfig:
    root = workspace.directory

    @tool(
        "list_files",
        TOOL_DESCRIPTIONS["list_files"],
        {"type": "object", "properties": {"folder": {"type": "string", "description": "Only under this folder."}}},
    )
    async def list_files(arguments: dict[str, Any]) -> dict[str, Any]:
        folder = str(arguments.get("folder") or "").strip("/")
        base = _inside(root, folder) if folder else root
        if base is None or not base.is_dir():
            return _error(f"/workspace/{folder} is not a folder of the workspace.")
        lines = [
            f"{path.relative_to(root)}\t{path.stat().st_size}"
            for path in sorted(base.rglob("*"))
            if path.is_file() and not path.is_symlink()
        ]
        shown = lines[:MAX_LISTED]
        more = f"\n… and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
        return _text("\n".join(shown) + more if shown else "The workspace has no files.")

    @tool(
        "present_files",
        TOOL_DESCRIPTIONS["present_files"],
        {
            "type": "object",
            "properties": {"paths": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 100}},
            "required": ["paths"],
        },
    )
    async def present_files(arguments: dict[str, Any]) -> dict[str, Any]:
        paths = [str(path).removeprefix("/workspace/").lstrip("/") for path in arguments.get("paths") or []]
        for path in paths:
            found = _inside(root, path) if not valid_path(path) else None
            if found is None or not found.is_file() or found.is_symlink():
                return _error(f"{path!r} is not a file of /workspace; nothing was presented.")
        items = await workspace.present(paths)
        for item in items:
            emit(item)
        return _text("Presented to the user: " + ", ".join(paths))

    tools = [t for t in (list_files, present_files) if not allowed or t.name in allowed]
    return create_sdk_mcp_server(name, tools=tools)


def _inside(root: Path, relative: str) -> Path | None:
    """The path under the workspace, or None when it leaves it (through `..` or a link)."""
    path = (root / relative).resolve()
    return path if path.is_relative_to(root.resolve()) else None


def _text(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


def _error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "is_error": True}
