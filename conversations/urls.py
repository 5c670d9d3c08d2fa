from django.urls import path

from api.routers import OptionalSlashRouter
from conversations import streams
from conversations.api import ConversationViewSet

router = OptionalSlashRouter()
router.register(r"tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/conversations", ConversationViewSet, basename="conversation")

conversation = "tenants/<str:tenant>/conversations/<uuid:conversation_id>"
urlpatterns = [
    path(f"{conversation}/events/stream", streams.event_stream, name="conversation-event-stream"),
    path(f"{conversation}/stream", streams.stream_message, name="conversation-stream"),
    *router.urls,
]
