from django.apps import AppConfig


class McpServersConfig(AppConfig):
    name = "mcp_servers"
    label = "mcp"
    verbose_name = "MCP servers"
