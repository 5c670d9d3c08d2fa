from django.urls import path

from sandbox import views

app_name = "offline"

urlpatterns = [
    path("v1/<path:rest>", views.offline_v1, name="v1"),
]
