"""A tenant's MCP servers, and the secrets their headers name.

A server belongs to a tenant, or is a platform server (no tenant) granted to every tenant or to
chosen ones; a tenant's own server wins a name they share. Its tools reach the agent as
`mcp__<name>__<tool>`. Header values may name secrets as `${name}`: they are resolved outside the
sandbox, at the gateway or in the worker, from the tenant's vault (`Secret`) or from values a message
brings for its run only.
"""

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from tenants.models import GrantedQuerySet, Tenant

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SECRET_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.-]{1,64})\}")


def validate_name(value: str) -> None:
    if not NAME.match(value):
        raise ValidationError("Use 1-40 lowercase letters, digits, '-' or '_', starting with a letter or digit.")


class McpServer(models.Model):
    class Kind(models.TextChoices):
        HTTP = "http", "Streamable HTTP"
        SSE = "sse", "Server-sent events"
        STDIO = "stdio", "A program in the sandbox"
        BUILTIN = "builtin", "The platform's own tools"
        OPENAPI = "openapi", "An OpenAPI 3 API"

    tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="mcp_servers",
        help_text="Empty for a platform server, which reaches the tenants it is granted to.",
    )
    name = models.CharField(
        max_length=40, validators=[validate_name], help_text="Its tools reach the agent as mcp__NAME__TOOL."
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    description = models.CharField(max_length=1024, blank=True)
    enabled = models.BooleanField(default=True)
    allowed_tools = models.JSONField(default=list, blank=True, help_text="Tool names the agent may call; empty = all.")
    url = models.URLField(max_length=2000, blank=True, help_text="http and sse: the server's URL.")
    headers = models.JSONField(
        default=dict,
        blank=True,
        help_text="http, sse, openapi: headers sent with every call; values may name ${secrets}.",
    )
    command = models.CharField(
        max_length=200, blank=True, help_text="stdio: an allow-listed program (MCP_STDIO_COMMANDS)."
    )
    args = models.JSONField(default=list, blank=True, help_text="stdio: its arguments.")
    openapi_document = models.JSONField(null=True, blank=True, help_text="openapi: the OpenAPI 3 document.")
    openapi_url = models.URLField(max_length=2000, blank=True, help_text="openapi: where the document was fetched.")
    base_url = models.URLField(max_length=2000, blank=True, help_text="openapi: where its operations are called.")
    all_tenants = models.BooleanField(default=False, help_text="A platform server: granted to every tenant.")
    granted_to = models.ManyToManyField(
        Tenant, blank=True, related_name="granted_mcp_servers", help_text="A platform server: the tenants it reaches."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = GrantedQuerySet["McpServer"].as_manager()

    class Meta:
        verbose_name = "MCP server"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="mcp_server_name_once_per_tenant"),
            models.UniqueConstraint(
                fields=["name"], condition=Q(tenant__isnull=True), name="platform_mcp_server_name_once"
            ),
        ]

    def __str__(self) -> str:
        return self.name if self.tenant_id else f"{self.name} (platform)"

    @property
    def is_platform(self) -> bool:
        return self.tenant_id is None

    def secret_names(self) -> set[str]:
        """The secrets its headers name."""
        return {name for value in self.headers.values() for name in SECRET_REFERENCE.findall(str(value))}


class Secret(models.Model):
    """A value kept encrypted (`mcp_servers.vault`), never shown again: MCP headers name it as `${name}`."""

    tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="secrets",
        help_text="Empty for a platform secret, which only platform servers use.",
    )
    name = models.CharField(max_length=64)
    encrypted = models.BinaryField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="secret_name_once_per_tenant"),
            models.UniqueConstraint(fields=["name"], condition=Q(tenant__isnull=True), name="platform_secret_once"),
        ]

    def __str__(self) -> str:
        return self.name
