"""Routes with or without a trailing slash."""

from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Routes that match with or without a trailing slash (`/conversations` and `/conversations/`)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
