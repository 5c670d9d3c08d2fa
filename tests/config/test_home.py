"""The front page: where a first visit (and the admin's "View site" link) lands."""

import pytest
from django.test import Client


@pytest.mark.django_db
def test_the_front_page_shows_the_way_in(admin_client: Client) -> None:
    page = Client().get("/")
    admin_index = admin_client.get("/admin/")

    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert b'href="/api/docs/"' in page.content and b'href="/admin/"' in page.content
    assert b'href="/"' in admin_index.content  # "View site"


def test_the_front_page_refuses_other_methods_in_json() -> None:
    response = Client().post("/")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
