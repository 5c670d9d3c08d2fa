from django.urls import path, re_path

from conversations.consumers import ConversationConsumer, NoSuchSocket

conversation_socket = ConversationConsumer.as_asgi()

websocket_urlpatterns = [
    path("ws/tenants/<str:tenant>/conversations/<uuid:conversation_id>/", conversation_socket),
    path("ws/tenants/<str:tenant>/conversations/<uuid:conversation_id>", conversation_socket),
    # Last: every other path is refused, instead of the router failing the handshake with a 500.
    re_path(r"", NoSuchSocket.as_asgi()),
]
