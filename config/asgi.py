import os

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from conversations import realtime  # noqa: E402
from conversations.routing import websocket_urlpatterns  # noqa: E402
from runs.dispatch import start_reaper_thread  # noqa: E402

# Origins are checked by the consumer itself: browsers must match ALLOWED_HOSTS, while API clients
# that send no Origin authenticate with a stream token.
router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)


async def application(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    realtime.bind_serving_loop()
    if settings.RUN_EXECUTION == "thread":
        # Without workers this process runs the runs, so it also reaps and redispatches them.
        start_reaper_thread()
    await router(scope, receive, send)
