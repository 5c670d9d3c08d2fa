from api.routers import OptionalSlashRouter
from tenants.api import LanguageModelViewSet, TenantViewSet

router = OptionalSlashRouter()
router.register("models", LanguageModelViewSet, basename="model")
router.register("tenants", TenantViewSet, basename="tenant")

urlpatterns = router.urls
