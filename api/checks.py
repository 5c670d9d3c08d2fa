"""System checks for a production deployment (`manage.py check --deploy`)."""

from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.checks import CheckMessage, Error, Tags, register


@register(Tags.staticfiles, deploy=True)
def static_files_collected(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Without `collectstatic`, the admin and the API docs answer 500 once DEBUG is off."""
    manifest = getattr(staticfiles_storage, "manifest_name", None)
    if settings.DEBUG or manifest is None or staticfiles_storage.exists(manifest):
        return []
    return [
        Error(
            f"The static files are not collected: {settings.STATIC_ROOT}/{manifest} is missing, so the admin "
            "and the API docs would fail.",
            hint="Run `manage.py collectstatic --noinput` (the Docker image does it when it is built).",
            id="api.E001",
        )
    ]
