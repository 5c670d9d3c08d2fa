"""A run's workspace against the local storage: in, out, versions, and what the agent presents."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connections
from pytest_django.fixtures import Settings

from conversations.models import Run
from tests.factories import RunFactory
from workspaces.models import WorkspaceFile
from workspaces.services import RunWorkspace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def places(settings: Settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RUN_ROOT = tmp_path / "runs"


@pytest_asyncio.fixture
async def run() -> AsyncIterator[Run]:
    made = await sync_to_async(RunFactory)()
    yield made
    await sync_to_async(connections.close_all)()


async def test_out_then_in_on_another_disk(run: Run, tmp_path: Path, settings: Settings) -> None:
    directory = tmp_path / "first"
    directory.mkdir()
    workspace = RunWorkspace(run, directory, owner=None)
    await workspace.sync_in()
    (directory / "outputs").mkdir()
    (directory / "outputs" / "report.md").write_text("# Report")
    (directory / "scratch.txt").write_text("notes")

    first = await workspace.sync_out()
    nothing = await workspace.sync_out()
    (directory / "scratch.txt").unlink()
    deleted = await workspace.sync_out()

    assert sorted((data["path"], data["change"], data["version"]) for _, data in first) == [
        ("outputs/report.md", "created", 1),
        ("scratch.txt", "created", 1),
    ]
    assert nothing == []
    assert [(data["path"], data["change"], data["version"]) for _, data in deleted] == [("scratch.txt", "deleted", 2)]
    presented = await sync_to_async(lambda: {f.path: f.presented for f in WorkspaceFile.objects.filter(version=1)})()
    assert presented == {"outputs/report.md": True, "scratch.txt": False}

    settings.RUN_ROOT = tmp_path / "another-worker"  # an empty disk: no local copy, no manifest
    elsewhere = tmp_path / "second"
    elsewhere.mkdir()
    await RunWorkspace(run, elsewhere, owner=None).sync_in()

    assert sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*")) == ["outputs", "outputs/report.md"]
    assert (elsewhere / "outputs" / "report.md").read_text() == "# Report"
