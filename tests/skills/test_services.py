"""Which skills a run gets, and how they are placed on the worker: once per checksum, read-only, checked."""

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.files.storage import storages
from pytest_django.fixtures import Settings

from skills import placement
from skills.archive import SkillContent, from_files
from skills.models import Skill, SkillVersion
from skills.services import add_version, create_skill, run_skills
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings: Settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RUN_ROOT = tmp_path / "runs"


def content(name: str, body: str = "Do the thing.", **files: bytes) -> SkillContent:
    skill_md = f"---\nname: {name}\ndescription: The {name} skill.\n---\n{body}\n".encode()
    return from_files([("SKILL.md", skill_md), *((path.replace("__", "/"), data) for path, data in files.items())])


def names(
    tenant: Tenant, conversation: list[str] | None = None, message: list[str] | None = None, **kw: object
) -> list[str]:
    chosen = run_skills(tenant, conversation, message, list(kw.get("preferred", [])), str(kw.get("text", "hi")))  # type: ignore[arg-type]
    return [version.skill.name for version in chosen.versions]


def test_a_run_gets_the_enabled_skills_narrowed_by_the_message_then_the_conversation(
    tenant: Tenant, make_tenant: Callable[..., Tenant]
) -> None:
    for name in ("alpha", "beta", "gamma", "policy"):
        create_skill(tenant, content(name), "test")
    Skill.objects.filter(name="gamma").update(enabled=False)
    Skill.objects.filter(name="policy").update(user_selectable=False)  # always on
    create_skill(make_tenant("globex"), content("theirs"), "test")

    assert names(tenant) == ["alpha", "beta", "policy"]
    assert names(tenant, conversation=["alpha"]) == ["alpha", "policy"]
    assert names(tenant, conversation=["alpha"], message=["beta"]) == ["beta", "policy"]
    assert names(tenant, conversation=["alpha"], message=[]) == ["policy"]
    assert names(tenant, conversation=[], preferred=["beta"]) == ["beta", "policy"]
    assert names(tenant, conversation=[], text="/alpha now") == ["policy"]  # not a command
    Skill.objects.filter(name="alpha").update(slash_command=True)
    assert names(tenant, conversation=[], text="/alpha now") == ["alpha", "policy"]
    # A choice stored before the skill was disabled places nothing.
    assert names(tenant, conversation=["gamma"]) == ["policy"]


def test_platform_skills_reach_the_tenants_they_are_granted_to_and_a_tenants_own_wins_a_name(
    tenant: Tenant, make_tenant: Callable[..., Tenant]
) -> None:
    globex = make_tenant("globex")
    everyone = create_skill(None, content("house-style"), "operator")
    everyone.all_tenants = True
    everyone.save()
    chosen = create_skill(None, content("pdf-tools"), "operator")
    chosen.granted_to.add(globex)
    create_skill(globex, content("house-style", "Globex's own."), "globex")

    assert names(tenant) == ["house-style"]
    acme_versions = run_skills(tenant, None, None, [], "hi").versions
    assert acme_versions[0].skill.is_platform
    globex_versions = run_skills(globex, None, None, [], "hi").versions
    assert [(v.skill.name, v.skill.is_platform) for v in globex_versions] == [
        ("house-style", False),
        ("pdf-tools", True),
    ]
    everyone.enabled = False
    everyone.save()
    assert names(tenant) == []


def test_placing_expands_a_version_once_then_links_it_read_only(tenant: Tenant, tmp_path: Path) -> None:
    skill = create_skill(tenant, content("tools", scripts__run=b"#!/bin/sh\necho hi\n", references__a=b"# A"), "t")
    version = skill.current_version
    assert version is not None

    placement.place_skills([version], tmp_path / "run-1" / "skills")
    # The second run is served from the worker's cache: storage is not read again.
    storages["default"].delete(skill.file_key(version.files[0]["sha256"]))
    placement.place_skills([version], tmp_path / "run-2" / "skills")

    placed = tmp_path / "run-2" / "skills" / "tools"
    assert (placed / "SKILL.md").read_text().startswith("---\nname: tools")
    assert sorted(str(p.relative_to(placed)) for p in placed.rglob("*") if p.is_file()) == [
        "SKILL.md",
        "references/a",
        "scripts/run",
    ]
    assert stat.S_IMODE((placed / "scripts" / "run").stat().st_mode) == 0o555
    assert stat.S_IMODE((placed / "SKILL.md").stat().st_mode) == 0o444
    assert stat.S_IMODE(placed.stat().st_mode) == 0o555
    cached = placement.cache_root() / version.sha256 / "SKILL.md"
    assert os.path.samefile(cached, placed / "SKILL.md")


def test_a_file_that_does_not_match_its_checksum_is_refused(tenant: Tenant, tmp_path: Path) -> None:
    skill = create_skill(tenant, content("tools"), "t")
    version = SkillVersion.objects.get(skill=skill)
    key = skill.file_key(version.files[0]["sha256"])
    Path(storages["default"].path(key)).write_bytes(b"tampered")

    with pytest.raises(placement.SkillsUnavailable, match="does not match its checksum"):
        placement.place_skills([version], tmp_path / "run" / "skills")
    assert [p.name for p in placement.cache_root().iterdir()] == []  # nothing half-expanded stays


def test_the_cache_drops_the_least_recently_used_versions_past_its_limit(
    tenant: Tenant, tmp_path: Path, settings: Settings
) -> None:
    settings.SKILL_CACHE_MB = 1
    big = os.urandom(600 * 1024)
    first = create_skill(tenant, content("first", data=big), "t").current_version
    second = add_version(Skill.objects.get(name="first"), content("first", data=big[::-1]), "t")
    assert first is not None

    placement.place_skills([first], tmp_path / "a")
    placement.place_skills([second], tmp_path / "b")

    assert [p.name for p in placement.cache_root().iterdir()] == [second.sha256]
    assert (tmp_path / "a" / "first" / "data").read_bytes() == big  # the run that had it keeps its copy
