from api.routers import OptionalSlashRouter
from skills.api import SkillViewSet

router = OptionalSlashRouter()
router.register(r"tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/skills", SkillViewSet, basename="skill")
urlpatterns = router.urls
