"""Workspaces on a real S3 protocol server (moto in server mode), through real workers, CLIs and sandboxes."""

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from tests.e2e.harness import (
    Client,
    Platform,
    S3Server,
    database_url,
    sandbox_reachable_dir,
    serving,
    tenant_client,
)
from workspaces.models import WorkspaceFile


@pytest.fixture(scope="module")
def stored(platform: Platform, s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose workspaces live in the S3 server, saving a running workspace every second."""
    with serving(
        database_url(connection.settings_dict),
        settings.REDIS_URL,
        tmp_path_factory.mktemp("stored"),
        WORKSPACE_SYNC_SECONDS="1",
        SANDBOX_FILE_MB="3000",  # so that the agent can make its 2 GB sparse file
        **s3.env,
    ) as stored_platform:
        yield stored_platform


@pytest.fixture
def acme(stored: Platform, transactional_db: None) -> Client:
    return tenant_client(stored.base_url, "acme")


def bash(client: Client, conversation: str, command: str) -> dict[str, Any]:
    run = client.send(conversation, f"[[bash {command}]]")
    return client.wait_for_terminal(conversation, run["id"])


def files_url(client: Client, conversation: str, suffix: str = "") -> str:
    return client.path(conversation, f"/files{suffix}")


def test_an_uploaded_file_is_read_by_the_agent_and_its_writes_come_back_as_versions(acme: Client, s3: S3Server) -> None:
    conversation = acme.create_conversation()
    uploaded = acme.http.post(files_url(acme, conversation), files={"file": ("brief.md", b"# The brief\n")})

    terminal = bash(
        acme,
        conversation,
        "cat /workspace/brief.md && mkdir -p /workspace/out && printf made-by-agent > /workspace/out/report.txt",
    )

    assert uploaded.status_code == 201, uploaded.text
    assert terminal["type"] == "run.completed", terminal
    assert "# The brief" in terminal["data"]["result"]
    events = [e for e in acme.events(conversation) if e["type"] == "file.changed"]
    digest = hashlib.sha256(b"made-by-agent").hexdigest()
    assert [e["data"] for e in events] == [
        {"path": "out/report.txt", "version": 1, "size": 13, "sha256": digest, "change": "created"}
    ]
    assert events[0]["seq"] < terminal["seq"]
    tree = {f["path"]: f for f in acme.http.get(files_url(acme, conversation)).json()}
    assert (tree["out/report.txt"]["sha256"], tree["out/report.txt"]["source"]) == (digest, "agent")
    assert acme.http.get(files_url(acme, conversation, "/out/report.txt")).content == b"made-by-agent"
    assert f"tenants/acme/conversations/{conversation}/blobs/{digest}" in s3.objects()


def test_the_next_turn_on_another_worker_with_an_empty_disk_sees_the_files(acme: Client, stored: Platform) -> None:
    conversation = acme.create_conversation()
    assert bash(acme, conversation, "printf kept > /workspace/kept.txt")["type"] == "run.completed"

    for worker in list(stored.workers):
        stored.kill(worker)
    stored.start_worker("second-worker", RUN_ROOT=sandbox_reachable_dir())
    terminal = bash(acme, conversation, "cat /workspace/kept.txt")

    assert terminal["type"] == "run.completed" and "kept" in terminal["data"]["result"]


def test_a_killed_workers_last_writes_are_in_storage(acme: Client, stored: Platform) -> None:
    conversation = acme.create_conversation()
    run = acme.send(conversation, "[[bash printf before-the-kill > /workspace/k.txt && sleep 60]]")
    deadline = time.monotonic() + 30
    while not WorkspaceFile.objects.filter(conversation_id=conversation, path="k.txt").exists():
        assert time.monotonic() < deadline, "the periodic save never came"
        time.sleep(0.2)

    for worker in list(stored.workers):
        stored.kill(worker)
    stored.start_worker("after-kill", RUN_ROOT=sandbox_reachable_dir())
    terminal = acme.wait_for_terminal(conversation, run["id"], timeout=30)

    assert terminal["type"] == "run.failed" and terminal["data"]["error"]["reason"] == "worker_lost"
    assert acme.http.get(files_url(acme, conversation, "/k.txt")).content == b"before-the-kill"


def test_an_interrupted_run_keeps_its_files(acme: Client) -> None:
    conversation = acme.create_conversation()
    run = acme.send(conversation, "[[bash printf half > /workspace/half.txt && sleep 60]]")
    deadline = time.monotonic() + 30
    while not any(e["type"] == "tool.result" or e["type"] == "message" for e in acme.events(conversation)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    assert acme.interrupt(conversation).status_code == 202

    terminal = acme.wait_for_terminal(conversation, run["id"])

    assert terminal["type"] == "run.interrupted"
    assert acme.http.get(files_url(acme, conversation, "/half.txt")).content == b"half"


def test_what_the_agent_cannot_carry_out_is_skipped_and_the_sync_neither_hangs_nor_fills(
    acme: Client, s3: S3Server
) -> None:
    conversation = acme.create_conversation()
    command = (
        "cd /workspace && ln -s /etc/shadow shadow && ln -s /proc/1/environ environ && printf mine > mine.txt"
        " && ln mine.txt hard && mkfifo pipe && truncate -s 2G sparse && printf ok > ok.txt"
    )

    started = time.monotonic()
    terminal = bash(acme, conversation, command)
    elapsed = time.monotonic() - started

    assert terminal["type"] == "run.completed", terminal
    assert elapsed < 30
    events = acme.events(conversation)
    changed = {e["data"]["path"] for e in events if e["type"] == "file.changed"}
    skipped = {e["data"]["path"] for e in events if e["type"] == "file.skipped"}
    assert changed == {"ok.txt"}
    assert skipped == {"shadow", "environ", "mine.txt", "hard", "pipe", "sparse"}
    keys = s3.objects(f"tenants/acme/conversations/{conversation}/")
    assert keys == [f"tenants/acme/conversations/{conversation}/blobs/{hashlib.sha256(b'ok').hexdigest()}"]


def test_a_run_stopped_by_its_budget_keeps_its_files(acme: Client) -> None:
    conversation = acme.create_conversation()
    body = {"text": "[[bash printf spent > /workspace/budget.txt]]", "budget": {"calls": 1}}
    run = acme.http.post(acme.path(conversation, "/messages"), json=body).json()

    terminal = acme.wait_for_terminal(conversation, run["id"])

    assert terminal["type"] == "run.failed" and terminal["data"]["error"]["reason"] == "budget_exceeded"
    assert acme.http.get(files_url(acme, conversation, "/budget.txt")).content == b"spent"


def test_deleting_a_conversation_empties_its_prefix_in_the_bucket(acme: Client, s3: S3Server) -> None:
    conversation = acme.create_conversation()
    acme.http.post(files_url(acme, conversation), files={"file": ("a.txt", b"a")})
    acme.http.post(files_url(acme, conversation), files={"file": ("b.txt", b"b")})
    prefix = f"tenants/acme/conversations/{conversation}/"
    assert len(s3.objects(prefix)) == 2

    assert acme.http.delete(acme.path(conversation)).status_code == 204

    assert s3.objects(prefix) == []
