"""What placing a run's skills costs: 20 skills of 1 MB each, cold (from S3, and from local storage) and cached on the worker.

Through the code a run uses: `run_skills` chooses them (the database), `place_skills` expands each
version once into the worker's cache and links it into the run (goal: under 30 ms cached, under 1 s
cold), against a real S3 protocol server (moto) on this machine.
"""

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import size

SKILLS = size(20, 2)
FILES_PER_SKILL = 4  # SKILL.md plus these, 256 KB each: 1 MB a skill
FILE_BYTES = 256 * 1024
REPEATS = size(5, 1)
CACHED_REPEATS = size(20, 1)


def figures(tenant: Any, work: Path) -> dict[str, float]:
    from django.test import override_settings

    from benchmarks.workspaces import s3_settings
    from tenants.models import Tenant
    from tests.e2e.harness import S3Server

    # A tenant of its own: the bench tenant's later runs would otherwise be given these skills, whose
    # files lived only on this part's S3 server (and fail with skills_unavailable once it is gone).
    tenant = Tenant.objects.create(id=f"{tenant.pk}-skills", name="Bench skills", default_model=tenant.default_model)
    s3 = S3Server(work)
    s3.start()
    results: dict[str, float] = {}
    try:
        with override_settings(**s3_settings(s3), RUN_ROOT=work / "skill-runs"):
            results.update(_placements(tenant, work / "skill-runs", "s3"))
    finally:
        s3.stop()
    with override_settings(MEDIA_ROOT=work / "skill-media", RUN_ROOT=work / "skill-runs-local"):
        results.update(_placements(tenant, work / "skill-runs-local", "local"))
    return results


def _placements(tenant: Any, runs: Path, storage: str) -> dict[str, float]:
    from skills.archive import from_files
    from skills.models import Skill
    from skills.placement import cache_root, place_skills
    from skills.services import create_skill, run_skills

    Skill.objects.filter(tenant=tenant).delete()
    for n in range(SKILLS):
        name = f"bench-skill-{n}"
        skill_md = f"---\nname: {name}\ndescription: Benchmark skill {n}.\n---\nRun the scripts.\n".encode()
        files = [("SKILL.md", skill_md)]
        files += [(f"references/part{i}.bin", os.urandom(FILE_BYTES)) for i in range(FILES_PER_SKILL)]
        create_skill(tenant, from_files(files), "bench")

    def place(run: int) -> float:
        started = time.perf_counter()
        chosen = run_skills(tenant, None, None, [], "bench")
        place_skills(chosen.versions, runs / f"run-{run}" / "skills")
        return time.perf_counter() - started

    cold = []
    for run in range(REPEATS):
        shutil.rmtree(cache_root(), ignore_errors=True)
        cold.append(place(run))
    cached = [place(REPEATS + run) for run in range(CACHED_REPEATS)]
    return {
        f"{storage}_cold": statistics.median(cold),
        f"{storage}_cached": statistics.median(cached),
        f"{storage}_cached_max": max(cached),
    }


def rows(figures: dict[str, float]) -> list[tuple[str, str]]:
    if not figures:
        return []
    return [
        (
            f"placing {SKILLS} skills of 1 MB, cold",
            f"{figures['s3_cold'] * 1000:.0f} ms   (fetched from S3 (moto) and checked; goal < 1 s)",
        ),
        ("  cold, from local storage", f"{figures['local_cold'] * 1000:.0f} ms   (FileSystemStorage)"),
        (
            "  cached on the worker",
            f"{figures['s3_cached'] * 1000:.1f} ms   (max {figures['s3_cached_max'] * 1000:.1f}; goal < 30 ms)",
        ),
    ]
