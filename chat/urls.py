from django.urls import path, re_path

from chat import views
from chat.api import ChatAgentViewSet, ChatLinkViewSet

api_urlpatterns = [
    re_path(
        r"^tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/chat-links/?$",
        ChatLinkViewSet.as_view({"post": "create"}),
        name="chat-links",
    ),
    re_path(
        r"^tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/chat-agents/?$",
        ChatAgentViewSet.as_view({"get": "list"}),
        name="chat-agents",
    ),
]

urlpatterns = [
    path("", views.page, name="chat"),
    path("open/<str:token>", views.open_link, name="chat-open"),
    path("staff/<slug:tenant>", views.staff_chat, name="chat-staff"),
]
