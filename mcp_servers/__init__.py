"""Tenant MCP servers (a Django app).

The design names this app `mcp`, but a top-level `mcp` package would shadow the Model Context
Protocol package that claude-agent-sdk imports (and break `from mcp import ClientSession`): the
package is `mcp_servers`, its app label stays `mcp`.
"""
