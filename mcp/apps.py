from django.apps import AppConfig


class McpConfig(AppConfig):
    verbose_name = "MCP servers"
    name = "mcp"
