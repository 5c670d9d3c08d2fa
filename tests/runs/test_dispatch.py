"""The reaper (stale runs failed, unclaimed runs dispatched again), the worker's claim, and sweeping leftovers."""

from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from django.utils import timezone
from pytest_django.fixtures import Settings

from conversations.events import TERMINAL_TYPES, finish_run
from conversations.models import Conversation, Run
from runs.dispatch import reap_stale_runs, sweep_run_leftovers
from runs.lease import claim_run
from runs.services import RunOptions, start_run
from tests.factories import RunFactory


def make_stale(run: Run, settings: Settings) -> None:
    stale_at = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 5)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=stale_at)


# --- reap_stale_runs ----------------------------------------------------------------------------------


def test_reaping_fails_a_running_run_whose_worker_stopped_beating(
    conversation: Conversation, settings: Settings
) -> None:
    run = start_run(conversation, RunOptions("Hi"))
    claim_run(run.pk)
    make_stale(run, settings)

    reaped = reap_stale_runs()

    assert reaped == 1
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert run.error["reason"] == "worker_lost"
    assert list(run.events.filter(type__in=TERMINAL_TYPES).values_list("type", flat=True)) == ["run.failed"]
    assert Conversation.objects.get(pk=conversation.pk).active_run_id is None


def test_reaping_leaves_a_run_with_a_fresh_heartbeat_alone(conversation: Conversation) -> None:
    run = start_run(conversation, RunOptions("Hi"))
    claim_run(run.pk)

    reaped = reap_stale_runs()

    assert reaped == 0
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING
    assert not run.events.filter(type__in=TERMINAL_TYPES).exists()


def test_reaping_twice_ends_a_stale_run_once(conversation: Conversation, settings: Settings) -> None:
    run = start_run(conversation, RunOptions("Hi"))
    claim_run(run.pk)
    make_stale(run, settings)

    counts = [reap_stale_runs(), reap_stale_runs()]

    assert counts == [1, 0]
    assert run.events.filter(type__in=TERMINAL_TYPES).count() == 1


def test_reaping_leaves_recently_queued_runs_alone(conversation: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    dispatched: list[object] = []
    monkeypatch.setattr("runs.dispatch.dispatch_run", dispatched.append)
    run = start_run(conversation, RunOptions("Hi"))

    reaped = reap_stale_runs()

    assert reaped == 0
    assert dispatched == []
    assert Run.objects.get(pk=run.pk).status == Run.Status.QUEUED


def test_reaping_dispatches_again_a_run_no_worker_took(
    conversation: Conversation, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatched: list[object] = []
    monkeypatch.setattr("runs.dispatch.dispatch_run", dispatched.append)
    run = start_run(conversation, RunOptions("Hi"))
    Run.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.RUN_REDISPATCH_SECONDS + 1)
    )

    reap_stale_runs()
    reap_stale_runs()

    assert dispatched == [run.pk]
    assert Run.objects.get(pk=run.pk).status == Run.Status.QUEUED


# --- claim_run ----------------------------------------------------------------------------------------


def test_claim_run_claims_a_queued_run_only_once(conversation: Conversation) -> None:
    run = start_run(conversation, RunOptions("Hi"))

    first = claim_run(run.pk)
    second = claim_run(run.pk)

    assert first is not None and first.pk == run.pk
    assert (first.status, bool(first.worker)) == (Run.Status.RUNNING, True)
    assert first.started_at is not None and first.heartbeat_at is not None
    assert second is None


def test_claim_run_refuses_a_run_that_already_ended(conversation: Conversation) -> None:
    run = start_run(conversation, RunOptions("Hi"))
    finish_run(run.pk, Run.Status.INTERRUPTED)

    claimed = claim_run(run.pk)

    assert claimed is None
    assert Run.objects.get(pk=run.pk).status == Run.Status.INTERRUPTED


def test_claim_run_of_an_unknown_run_is_none(db: None) -> None:
    assert claim_run(uuid4()) is None


# --- leftovers of dead workers --------------------------------------------------------------------


def test_sweeping_removes_what_finished_runs_left_behind_and_keeps_everything_else(
    conversation: Conversation, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.RUN_ROOT = tmp_path
    cgroups = tmp_path / "cgroup" / "pids" / "agent-platform"  # a v1 layout, not the host's own
    monkeypatch.setattr("sandbox.limits.CGROUP_ROOT", tmp_path / "cgroup")
    finished = start_run(conversation, RunOptions("Hi"))
    finish_run(finished.pk, Run.Status.FAILED, error={"reason": "worker_lost", "message": "gone"})
    unfinished = RunFactory(conversation=conversation)
    for run_id in (finished.pk, unfinished.pk, "not-a-run"):
        (tmp_path / "runs" / str(run_id) / "claude").mkdir(parents=True)
        (cgroups / str(run_id)).mkdir(parents=True)

    swept = sweep_run_leftovers(min_age_seconds=0)

    assert swept == 1
    kept = sorted([str(unfinished.pk), "not-a-run"])  # and what another installation may own
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == kept
    assert sorted(path.name for path in cgroups.iterdir()) == kept
