"""The periodic workspace save and the last one: a save in flight is finished, never cut short."""

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from runs import executor
from runs.executor import RunExecution

pytestmark = pytest.mark.asyncio


class Recorder:
    def __init__(self, run: Any) -> None:
        self.emitted: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.emitted.append((kind, data))


class SlowWorkspace:
    """Its first save is still recording when the run ends; the ones after it find nothing new."""

    def __init__(self) -> None:
        self.saving = asyncio.Event()
        self.recorded = asyncio.Event()
        self.saves = 0

    async def sync_out(self) -> list[tuple[str, dict[str, Any]]]:
        self.saves += 1
        if self.saves > 1:
            return []
        self.saving.set()
        await self.recorded.wait()
        return [("file.changed", {"path": "out/report.txt", "version": 1})]


@pytest.fixture
def execution(monkeypatch: pytest.MonkeyPatch, settings: Any) -> RunExecution:
    settings.WORKSPACE_SYNC_SECONDS = 0.01
    monkeypatch.setattr(executor, "EventWriter", Recorder)
    return RunExecution(SimpleNamespace(pk=1, conversation=None, model=None, suspensions=0))  # type: ignore[arg-type]


async def test_the_last_save_waits_for_a_periodic_save_in_flight_and_keeps_its_events(execution: RunExecution) -> None:
    workspace = SlowWorkspace()
    execution.setup = SimpleNamespace(workspace=workspace)  # type: ignore[assignment]
    execution.saver = asyncio.create_task(execution._save_workspace_periodically(workspace))  # type: ignore[arg-type]
    await asyncio.wait_for(workspace.saving.wait(), 5)

    ending = asyncio.create_task(execution._sync_workspace_out())
    await asyncio.sleep(0.05)
    workspace.recorded.set()
    await asyncio.wait_for(ending, 5)

    assert execution.writer.emitted == [("file.changed", {"path": "out/report.txt", "version": 1})]  # type: ignore[attr-defined]
    assert workspace.saves == 2  # the periodic one, then the last one; none after it
    assert execution.saver.done()


async def test_a_quiet_saver_stops_at_once_when_the_run_ends(execution: RunExecution, settings: Any) -> None:
    settings.WORKSPACE_SYNC_SECONDS = 3600
    workspace = SlowWorkspace()
    workspace.recorded.set()
    execution.setup = SimpleNamespace(workspace=workspace)  # type: ignore[assignment]
    execution.saver = asyncio.create_task(execution._save_workspace_periodically(workspace))  # type: ignore[arg-type]
    await asyncio.sleep(0)

    await asyncio.wait_for(execution._sync_workspace_out(), 1)

    assert workspace.saves == 1  # only the last save
    assert execution.writer.emitted == [("file.changed", {"path": "out/report.txt", "version": 1})]  # type: ignore[attr-defined]
