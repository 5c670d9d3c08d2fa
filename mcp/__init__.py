"""Tenant MCP servers (a Django app).

This folder must be called `mcp`, and so is the Model Context Protocol package that
claude-agent-sdk imports (`mcp.types`, `mcp.server`, `mcp.shared`). Adding that package's directory
to this package's path lets both live under the one name: its submodules resolve there, ours here.
None of its modules import from the top-level `mcp` itself, so nothing else is needed.
"""

import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
for _entry in sys.path:
    _candidate = Path(_entry or ".").resolve() / "mcp"
    if _candidate != _here and (_candidate / "__init__.py").is_file():
        __path__.append(str(_candidate))
        break
