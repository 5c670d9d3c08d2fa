from rest_framework.routers import SimpleRouter

from tenants.api import LanguageModelViewSet, TenantViewSet

router = SimpleRouter(trailing_slash="/?")
router.register("models", LanguageModelViewSet, basename="model")
router.register("tenants", TenantViewSet, basename="tenant")

urlpatterns = router.urls
