from django.urls import path

from conversations.consumers import ConversationConsumer

websocket_urlpatterns = [
    path(
        "ws/tenants/<str:tenant>/conversations/<uuid:conversation_id>/",
        ConversationConsumer.as_asgi(),
    ),
]
