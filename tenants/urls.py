from tenants.api import LanguageModelViewSet, TenantViewSet
from tenants.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("models", LanguageModelViewSet, basename="model")
router.register("tenants", TenantViewSet, basename="tenant")

urlpatterns = router.urls
