"""Workspace sync figures, against a real S3 protocol server (moto in server mode) on this machine.

Sync out and sync in of 1,000 small files and of one 100 MB file, and the cost of a sync out when
nothing changed (goal: under 20 ms for 1,000 unchanged files), all through `RunWorkspace`, the code a
run uses, with the database and the storage it would talk to.
"""

import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import size

SMALL_FILES = size(1000, 20)
SMALL_BYTES = 1024
LARGE_BYTES = size(100, 1) * 1024 * 1024
UNCHANGED_REPEATS = size(20, 1)


def figures(tenant: Any, work: Path) -> dict[str, float]:
    from asgiref.sync import async_to_sync
    from django.test import override_settings

    from conversations.models import Conversation, Run
    from tests.e2e.harness import S3Server
    from workspaces.services import RunWorkspace

    s3 = S3Server(work)
    s3.start()
    results: dict[str, float] = {}
    try:
        with override_settings(**s3_settings(s3), RUN_ROOT=work / "workspace-runs", WORKSPACE_FILE_MB=200):
            for name, make in (("small", _small_files), ("large", _large_file)):
                conversation = Conversation.objects.create(tenant=tenant, model=tenant.default_model)
                run = Run.objects.create(conversation=conversation, model=conversation.model, input="bench")
                written = work / f"{name}-out"
                written.mkdir()
                workspace = RunWorkspace(run, written, owner=None)
                make(written)
                results[f"{name}_out"] = _timed(async_to_sync(workspace.sync_out))
                if name == "small":
                    unchanged = [_timed(async_to_sync(workspace.sync_out)) for _ in range(UNCHANGED_REPEATS)]
                    results["small_unchanged"] = statistics.median(unchanged)
                fresh = work / f"{name}-in"
                fresh.mkdir()
                with override_settings(RUN_ROOT=work / f"{name}-empty-disk"):
                    reader = RunWorkspace(run, fresh, owner=None)
                    results[f"{name}_in"] = _timed(async_to_sync(reader.sync_in))
    finally:
        s3.stop()
    return results


def s3_settings(s3: Any) -> dict[str, Any]:
    """Settings that put the default storage on the S3 protocol server `s3` (tests.e2e.harness.S3Server)."""
    storage = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": s3.BUCKET}}
    return {
        "STORAGES": {
            "default": storage,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
        "AWS_S3_ENDPOINT_URL": s3.url,
        "AWS_S3_ACCESS_KEY_ID": s3.env["AWS_S3_ACCESS_KEY_ID"],
        "AWS_S3_SECRET_ACCESS_KEY": s3.env["AWS_S3_SECRET_ACCESS_KEY"],
        "AWS_S3_REGION_NAME": "us-east-1",
    }


def _small_files(directory: Path) -> None:
    for n in range(SMALL_FILES):
        folder = directory / f"dir{n // 100}"
        folder.mkdir(exist_ok=True)
        (folder / f"file{n}.txt").write_bytes(os.urandom(SMALL_BYTES))


def _large_file(directory: Path) -> None:
    with open(directory / "large.bin", "wb") as large:
        for _ in range(LARGE_BYTES // (1024 * 1024)):
            large.write(os.urandom(1024 * 1024))


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def rows(figures: dict[str, float]) -> list[tuple[str, str]]:
    if not figures:
        return []
    return [
        (
            f"workspace sync out, {SMALL_FILES:,} small files",
            f"{figures['small_out'] * 1000:.0f} ms   (1 KB each, all new, to S3 (moto))",
        ),
        ("  again, nothing changed", f"{figures['small_unchanged'] * 1000:.1f} ms   (goal < 20 ms)"),
        (
            f"workspace sync in, {SMALL_FILES:,} small files",
            f"{figures['small_in'] * 1000:.0f} ms   (an empty disk, from S3)",
        ),
        (f"workspace sync out, one {LARGE_BYTES // 2**20} MB file", f"{figures['large_out'] * 1000:.0f} ms"),
        (f"workspace sync in, one {LARGE_BYTES // 2**20} MB file", f"{figures['large_in'] * 1000:.0f} ms"),
    ]
