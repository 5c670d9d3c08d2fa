from api.routers import OptionalSlashRouter
from mcp_servers.api import McpServerViewSet, SecretViewSet

router = OptionalSlashRouter()
router.register(r"tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/mcp-servers", McpServerViewSet, basename="mcp-server")
router.register(r"tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/secrets", SecretViewSet, basename="secret")
urlpatterns = router.urls
