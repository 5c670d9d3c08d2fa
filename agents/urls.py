from agents.api import AgentViewSet
from api.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register(r"tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/agents", AgentViewSet, basename="agent")
urlpatterns = router.urls
