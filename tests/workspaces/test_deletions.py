"""What a deletion leaves in storage: exactly what it did not name, byte for byte, on local disk and on S3.

Every test builds the same world (two conversations and two versions of a skill in `acme`, the same
in `globex`, a platform skill), deletes one thing through a real surface, then compares every stored
object with a snapshot taken before: what was deleted is gone, and every neighbour is still there with
the same bytes. Deletions run in real transactions, so their after-commit work runs as in production.
"""

import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from conversations.models import Conversation
from mcp_servers import vault
from mcp_servers.models import McpServer, Secret
from runs.services import delete_conversation
from skills.archive import from_files
from skills.models import Skill
from skills.services import add_version, create_skill
from tenants.models import ApiKey, Tenant
from tenants.storage import WideDeletion, delete_tree
from tests.conftest import client_with_key
from tests.e2e.harness import S3Server
from tests.factories import ConversationFactory, McpServerFactory, RunFactory
from workspaces.models import WorkspaceFile
from workspaces.services import save_file

pytestmark = pytest.mark.django_db(transaction=True)

Snapshot = dict[str, str]  # key → sha256 of its bytes


@dataclass
class Store:
    """The storage a test runs on, read directly (not through the code under test)."""

    kind: str
    read_all: Callable[[], Snapshot]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Store:
    settings.RUN_ROOT = tmp_path / "runs"
    if request.param == "local":
        root = tmp_path / "media"
        settings.MEDIA_ROOT = root
        settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}

        def read_local() -> Snapshot:
            return {
                path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
                for path in root.rglob("*")
                if path.is_file()
            }

        return Store("local", read_local)

    server: S3Server = request.getfixturevalue("s3")
    client = server.client()
    for key in server.objects():  # a bucket of its own for each test
        client.delete_object(Bucket=server.BUCKET, Key=key)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": server.BUCKET,
                "endpoint_url": server.url,
                "access_key": "e2e-access-key",
                "secret_key": "e2e-secret-key",
                "region_name": "us-east-1",
            },
        },
    }

    def read_s3() -> Snapshot:
        return {
            key: hashlib.sha256(client.get_object(Bucket=server.BUCKET, Key=key)["Body"].read()).hexdigest()
            for key in server.objects()
        }

    return Store("s3", read_s3)


def skill_zip(name: str, body: str, **files: bytes) -> list[tuple[str, bytes]]:
    skill_md = f"---\nname: {name}\ndescription: The {name} skill.\n---\n{body}\n".encode()
    return [("SKILL.md", skill_md), *files.items()]


@dataclass
class World:
    acme: Tenant
    globex: Tenant
    first: Conversation  # acme's
    second: Conversation  # acme's
    theirs: Conversation  # globex's
    skill: Skill  # acme's "greet", two versions sharing SKILL.md's helper
    before: Snapshot

    def keys_of(self, snapshot: Snapshot, prefix: str) -> Snapshot:
        return {key: digest for key, digest in snapshot.items() if key.startswith(prefix)}


@pytest.fixture
def world(store: Store, make_tenant: Callable[..., Tenant]) -> World:
    acme, globex = make_tenant("acme"), make_tenant("globex")
    conversations = []
    for tenant, title in [(acme, "first"), (acme, "second"), (globex, "theirs")]:
        conversation = ConversationFactory(tenant=tenant, title=title)
        for path, content in [("notes.md", f"# {title}\n"), ("out/report.csv", f"{title},1\n")]:
            save_file(conversation, path, io.BytesIO(content.encode()), source=WorkspaceFile.Source.USER)
        conversations.append(conversation)
    skill = create_skill(acme, from_files(skill_zip("greet", "v1", **{"helper.sh": b"echo hi\n"})), "alice")
    add_version(skill, from_files(skill_zip("greet", "v2", **{"helper.sh": b"echo hi\n"})), "alice")
    create_skill(acme, from_files(skill_zip("other", "Another skill.")), "alice")
    create_skill(globex, from_files(skill_zip("greet", "Globex's own greet.")), "bob")
    create_skill(None, from_files(skill_zip("house-style", "Write plainly.")), "operator")
    before = store.read_all()
    assert (
        len(before) == 6 + 3 + 1 + 1 + 1
    )  # 3 conversations, 2 files each; greet v1, v2, shared helper; other; globex; platform
    return World(acme, globex, *conversations, skill=skill, before=before)


@pytest.fixture
def acme_client(world: World) -> APIClient:
    return client_with_key(ApiKey.issue("acme key", tenant=world.acme)[1])


@pytest.fixture
def staff(world: World) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("operator", "operator@example.com", "x"))
    return client


def conversation_prefix(conversation: Conversation) -> str:
    return f"tenants/{conversation.tenant_id}/conversations/{conversation.pk}/"


def without(snapshot: Snapshot, *prefixes: str) -> Snapshot:
    return {key: digest for key, digest in snapshot.items() if not key.startswith(prefixes)}


def assert_only_deleted(store: Store, world: World, *prefixes: str) -> None:
    after = store.read_all()
    assert all(world.keys_of(world.before, prefix) for prefix in prefixes), "the test deletes something stored"
    assert after == without(world.before, *prefixes)


def test_deleting_a_conversation_over_rest_leaves_its_neighbours_byte_for_byte(
    store: Store, world: World, acme_client: APIClient
) -> None:
    response = acme_client.delete(f"/api/tenants/acme/conversations/{world.first.pk}")

    assert response.status_code == 204, response.content
    assert_only_deleted(store, world, conversation_prefix(world.first))
    kept = acme_client.get(f"/api/tenants/acme/conversations/{world.second.pk}/files/notes.md")
    assert b"".join(kept.streaming_content) == b"# second\n"


def test_deleting_a_conversation_in_the_admin_leaves_its_neighbours(store: Store, world: World, staff: Client) -> None:
    response = staff.post(f"/admin/conversations/conversation/{world.first.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=world.first.pk).exists()
    assert_only_deleted(store, world, conversation_prefix(world.first))


def test_the_admins_bulk_deletion_deletes_the_chosen_conversations_files_only(
    store: Store, world: World, staff: Client
) -> None:
    chosen = [world.first.pk, world.theirs.pk]

    response = staff.post(
        "/admin/conversations/conversation/",
        {"action": "delete_selected", "_selected_action": chosen, "post": "yes"},
    )

    assert response.status_code == 302
    assert set(Conversation.objects.values_list("title", flat=True)) == {"second"}
    assert_only_deleted(store, world, conversation_prefix(world.first), conversation_prefix(world.theirs))


def test_a_refused_deletion_deletes_nothing(store: Store, world: World) -> None:
    run = RunFactory(conversation=world.first)
    Conversation.objects.filter(pk=world.first.pk).update(active_run=run)

    with pytest.raises(Exception, match="A run is active"):
        delete_conversation(world.first)

    assert store.read_all() == world.before


def test_a_rolled_back_deletion_deletes_nothing(store: Store, world: World) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        delete_conversation(world.first)
        raise RuntimeError("something later in the same transaction failed")

    assert Conversation.objects.filter(pk=world.first.pk).exists()
    assert store.read_all() == world.before


def test_deleting_a_skill_deletes_its_folder_only(store: Store, world: World, acme_client: APIClient) -> None:
    response = acme_client.delete("/api/tenants/acme/skills/greet")

    assert response.status_code == 204, response.content
    assert_only_deleted(store, world, "tenants/acme/skills/greet/")
    assert list(Skill.objects.filter(name="greet").values_list("tenant_id", flat=True)) == ["globex"]


def test_deleting_a_skill_version_keeps_the_files_other_versions_list(
    store: Store, world: World, acme_client: APIClient
) -> None:
    v1, v2 = world.skill.versions.order_by("number")
    only_in_v1 = {entry["sha256"] for entry in v1.files} - {entry["sha256"] for entry in v2.files}
    v2_download = b"".join(acme_client.get("/api/tenants/acme/skills/greet/versions/2/download").streaming_content)

    response = acme_client.delete("/api/tenants/acme/skills/greet/versions/1")

    assert response.status_code == 204, response.content
    assert len(only_in_v1) == 1  # v1's SKILL.md; helper.sh is shared
    assert_only_deleted(store, world, *(f"tenants/acme/skills/greet/files/{sha}" for sha in only_in_v1))
    assert (
        b"".join(acme_client.get("/api/tenants/acme/skills/greet/versions/2/download").streaming_content) == v2_download
    )
    assert zipfile.ZipFile(io.BytesIO(v2_download)).read("greet/helper.sh") == b"echo hi\n"
    assert acme_client.get("/api/tenants/acme/skills/greet/versions/1").status_code == 404


def test_the_current_version_of_a_skill_cannot_be_deleted(store: Store, world: World, acme_client: APIClient) -> None:
    response = acme_client.delete("/api/tenants/acme/skills/greet/versions/2")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "current_version"
    assert "make another version current first" in response.json()["error"]["message"]
    assert store.read_all() == world.before


def test_deleting_an_mcp_server_deletes_no_stored_file_and_no_other_server(
    store: Store, world: World, acme_client: APIClient
) -> None:
    for tenant in (world.acme, world.globex):
        McpServerFactory(tenant=tenant, name="files")
        McpServerFactory(tenant=tenant, name="docs")
        vault.store(tenant, "token", "a secret")

    response = acme_client.delete("/api/tenants/acme/mcp-servers/files")

    assert response.status_code == 204, response.content
    assert store.read_all() == world.before
    assert sorted(McpServer.objects.values_list("tenant_id", "name")) == [
        ("acme", "docs"),
        ("globex", "docs"),
        ("globex", "files"),
    ]
    assert Secret.objects.count() == 2


def test_deleting_a_tenant_in_the_admin_deletes_its_files_and_no_one_elses(
    store: Store, world: World, staff: Client
) -> None:
    response = staff.post("/admin/tenants/tenant/acme/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Tenant.objects.filter(pk="acme").exists()
    assert_only_deleted(store, world, "tenants/acme/")
    assert world.keys_of(store.read_all(), "platform/") == world.keys_of(world.before, "platform/")


def test_deleting_a_tenant_over_rest_deletes_its_files_and_no_one_elses(store: Store, world: World) -> None:
    operator = client_with_key(ApiKey.issue("platform admin")[1])

    response = operator.delete("/api/tenants/acme")

    assert response.status_code == 204, response.content
    assert_only_deleted(store, world, "tenants/acme/")


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "/",
        "tenants/",
        "tenants/acme/",  # a whole tenant: delete_tenant_files, by its own name
        "tenants/acme/conversations/None/",
        "tenants/None/conversations/",
        "tenants/acme/conversations/../",
        "tenants/acme/conversations",  # not a folder
        "tenants//conversations/",
        "platform/",
    ],
)
def test_a_deletion_that_would_reach_past_one_owners_folder_is_refused(prefix: str, store: Store) -> None:
    with pytest.raises(WideDeletion):
        delete_tree(prefix)
