"""A conversation's files over REST, on the local storage of the embedded defaults."""

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from conversations.models import Conversation, Event
from tests.api.assertions import error_of
from workspaces.models import WorkspaceFile

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings: Settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def files_url(conversation: Conversation, suffix: str = "") -> str:
    return f"/api/tenants/{conversation.tenant_id}/conversations/{conversation.pk}/files{suffix}"


def upload(
    client: APIClient, conversation: Conversation, content: bytes, name: str = "notes.txt", **fields: str
) -> Any:
    body = {"file": SimpleUploadedFile(name, content), **fields}
    return client.post(files_url(conversation), body, format="multipart")


def test_upload_list_read_replace_and_delete_a_file(api_client: APIClient, conversation: Conversation) -> None:
    first = upload(api_client, conversation, b"first draft", path="docs/brief.md")
    second = upload(api_client, conversation, b"second draft", path="docs/brief.md")
    tree = api_client.get(files_url(conversation)).json()
    current = api_client.get(files_url(conversation, "/docs/brief.md"))
    old = api_client.get(files_url(conversation, "/docs/brief.md"), {"version": 1})
    deleted = api_client.delete(files_url(conversation, "/docs/brief.md"))
    history = api_client.get(files_url(conversation, "/docs/brief.md/versions")).json()

    assert first.status_code == second.status_code == 201
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    assert [(f["path"], f["version"], f["size"], f["source"]) for f in tree] == [("docs/brief.md", 2, 12, "user")]
    assert b"".join(current.streaming_content) == b"second draft"
    assert b"".join(old.streaming_content) == b"first draft"
    assert deleted.status_code == 204
    assert api_client.get(files_url(conversation)).json() == []
    assert error_of(api_client.get(files_url(conversation, "/docs/brief.md")), 404)
    assert [(v["version"], v["deleted"]) for v in history] == [(3, True), (2, False), (1, False)]


def test_a_file_is_stored_once_per_content(api_client: APIClient, conversation: Conversation, media: Path) -> None:
    upload(api_client, conversation, b"same", path="a.txt")
    upload(api_client, conversation, b"same", path="b.txt")

    blobs = list((media / "tenants" / "acme" / "conversations" / str(conversation.pk) / "blobs").iterdir())
    assert len(blobs) == 1 and blobs[0].read_bytes() == b"same"


@pytest.mark.parametrize(
    "path",
    ["../escape.txt", "/etc/passwd", "a//b", "x" * 1025, "a/./b", "a\nb.txt", "tab\there", "\x1b[31mred", "del\x7f"],
)
def test_a_bad_path_is_400_saying_what_to_use(api_client: APIClient, conversation: Conversation, path: str) -> None:
    error = error_of(upload(api_client, conversation, b"x", path=path), 400)

    assert "path" in error["fields"]
    assert not WorkspaceFile.objects.exists()


def test_an_upload_over_the_file_limit_is_413(
    api_client: APIClient, conversation: Conversation, settings: Settings
) -> None:
    settings.WORKSPACE_FILE_MB = 1

    error = error_of(upload(api_client, conversation, b"x" * (1024 * 1024 + 1)), 413)

    assert "WORKSPACE_FILE_MB" in error["message"]


def test_json_instead_of_multipart_is_415_saying_to_send_a_multipart_form(
    api_client: APIClient, conversation: Conversation
) -> None:
    response = api_client.post(files_url(conversation), {"file": "x"}, format="json")

    assert error_of(response, 415)["message"] == (
        "Send the body as a multipart form, with Content-Type: multipart/form-data (not application/json)."
    )


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("file", {"file": [SimpleUploadedFile("a.txt", b"a"), SimpleUploadedFile("b.txt", b"b")]}),
        ("path", {"file": SimpleUploadedFile("a.txt", b"a"), "path": ["one.txt", "two.txt"]}),
    ],
)
def test_an_upload_with_two_files_or_paths_is_400_and_stores_nothing(
    api_client: APIClient, conversation: Conversation, field: str, body: dict[str, Any]
) -> None:
    response = api_client.post(files_url(conversation), body, format="multipart")

    assert error_of(response, 400)["fields"] == {
        field: [f"Send one `{field}`: an upload stores one file (a message takes several, as `file` parts)."]
    }
    assert not WorkspaceFile.objects.exists()


def test_another_tenants_or_users_files_do_not_exist(
    api_client: APIClient, other_api_client: APIClient, tenant_key: str, conversation: Conversation
) -> None:
    upload(api_client, conversation, b"secret", path="s.txt")
    bob = APIClient(HTTP_X_API_KEY=tenant_key, HTTP_X_USER_ID="bob")  # the conversation is alice's

    for client in (other_api_client, bob):
        assert error_of(client.get(files_url(conversation)), 404)
        assert error_of(client.get(files_url(conversation, "/s.txt")), 404)
        assert error_of(client.get(files_url(conversation, "/s.txt/versions")), 404)
        assert error_of(client.delete(files_url(conversation, "/s.txt")), 404)
        assert error_of(upload(client, conversation, b"x"), 404)


@pytest.mark.django_db(transaction=True)
def test_deleting_the_conversation_removes_its_stored_files(
    api_client: APIClient, conversation: Conversation, media: Path
) -> None:
    upload(api_client, conversation, b"gone soon")
    folder = media / "tenants" / "acme" / "conversations" / str(conversation.pk)
    assert folder.exists()

    assert api_client.delete(f"/api/tenants/acme/conversations/{conversation.pk}").status_code == 204

    assert not folder.exists()


def test_a_message_brings_files_that_are_stored_before_its_run_and_named_to_the_agent(
    api_client: APIClient, conversation: Conversation
) -> None:
    body = {
        "text": "Summarise these",
        "file": [SimpleUploadedFile("a.csv", b"x,y\n1,2\n"), SimpleUploadedFile("b.md", b"# B")],
    }

    response = api_client.post(f"/api/tenants/acme/conversations/{conversation.pk}/messages", body, format="multipart")

    assert response.status_code == 202, response.content
    run = conversation.runs.get()
    assert run.input == (
        "Summarise these\n\nThe user attached these files:\n- /workspace/a.csv (8 bytes)\n- /workspace/b.md (3 bytes)"
    )
    assert [(f.path, f.source) for f in WorkspaceFile.objects.current().order_by("path")] == [
        ("a.csv", "user"),
        ("b.md", "user"),
    ]


def test_run_queued_says_what_the_user_typed_and_which_files_came_with_it(
    api_client: APIClient, conversation: Conversation
) -> None:
    body = {"text": "Summarise these", "file": [SimpleUploadedFile("a.csv", b"x,y\n1,2\n")]}

    response = api_client.post(f"/api/tenants/acme/conversations/{conversation.pk}/messages", body, format="multipart")

    assert response.status_code == 202, response.content
    queued = Event.objects.get(run_id=response.json()["id"], type="run.queued").data
    assert queued["text"] == "Summarise these"
    assert queued["attachments"] == [{"path": "a.csv", "size": 8}]
    assert queued["input"].startswith("Summarise these\n\nThe user attached these files:")


def test_a_refused_message_stores_none_of_its_files(api_client: APIClient, conversation: Conversation) -> None:
    body = {"text": "   ", "file": [SimpleUploadedFile("a.csv", b"x")]}

    response = api_client.post(f"/api/tenants/acme/conversations/{conversation.pk}/messages", body, format="multipart")

    assert error_of(response, 400)["fields"] == {"text": ["The message text is empty."]}
    assert not WorkspaceFile.objects.exists()


def test_a_message_with_files_takes_the_json_messages_options_as_json_fields(
    api_client: APIClient, conversation: Conversation
) -> None:
    body = {
        "text": "Read it",
        "file": [SimpleUploadedFile("a.csv", b"x")],
        "budget": json.dumps({"calls": 3}),
        "skills": "[]",
        "mcp_servers": "[]",
    }

    response = api_client.post(f"/api/tenants/acme/conversations/{conversation.pk}/messages", body, format="multipart")

    assert response.status_code == 202, response.content
    run = conversation.runs.get()
    assert (run.budget_calls, run.skills, run.mcp_servers) == (3, [], [])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("skills", "pdf", 'Send this field as JSON, as in the JSON message (for skills: ["pdf"]).'),
        ("skills", '["nope"]', "nope"),
        (
            "colour",
            "blue",
            "Unknown field. Allowed fields: text, file, budget, skills, preferred_skills, mcp_servers, mcp_tokens.",
        ),
    ],
)
def test_a_multipart_messages_bad_option_is_named_and_stores_no_file(
    api_client: APIClient, conversation: Conversation, field: str, value: str, message: str
) -> None:
    body = {"text": "Read it", "file": [SimpleUploadedFile("a.csv", b"x")], field: value}

    response = api_client.post(f"/api/tenants/acme/conversations/{conversation.pk}/messages", body, format="multipart")

    error = error_of(response, 400)
    assert message in (error["fields"][field][0] if "fields" in error else error["message"])
    assert not WorkspaceFile.objects.exists() and not conversation.runs.exists()


def test_the_admin_lists_a_conversations_file_versions_and_downloads_them(
    api_client: APIClient, admin_client: Any, conversation: Conversation
) -> None:
    upload(api_client, conversation, b"v1", path="docs/a.md")
    upload(api_client, conversation, b"version two", path="docs/a.md")
    second = WorkspaceFile.objects.get(version=2)

    page = admin_client.get(f"/admin/conversations/conversation/{conversation.pk}/change/")
    listing = admin_client.get(f"/admin/workspaces/workspacefile/?q={conversation.pk}")
    download = admin_client.get(f"/admin/workspaces/workspacefile/{second.pk}/download/")

    assert b"2 file version(s)" in page.content
    assert listing.status_code == 200 and listing.content.count(b"docs/a.md") >= 2
    assert b"".join(download.streaming_content) == b"version two"


@pytest.mark.django_db(transaction=True)
def test_deleting_the_tenant_removes_all_its_stored_files(
    api_client: APIClient, admin_api_client: APIClient, conversation: Conversation, media: Path
) -> None:
    upload(api_client, conversation, b"the tenant's")
    assert (media / "tenants" / "acme").exists()

    assert admin_api_client.delete("/api/tenants/acme").status_code == 204

    assert not (media / "tenants" / "acme").exists()
