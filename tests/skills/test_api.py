"""Uploading, versioning and choosing a tenant's skills over REST; every bad upload is a 4xx naming the problem."""

import io
import stat
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from skills.models import Skill, SkillVersion
from tests.api.assertions import error_of

pytestmark = pytest.mark.django_db

SKILL_MD = """---
name: csv-report
description: Summarises CSV files into a short report. Use when the user brings a CSV.
---
# CSV report

Run `python3 scripts/report.py <file>` and show its output.
"""
URL = "/api/tenants/acme/skills"


@pytest.fixture(autouse=True)
def media(settings: Settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def zipped(files: dict[str, bytes], *, folder: str = "", links: tuple[str, ...] = ()) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            archive.writestr(f"{folder}{path}", content)
        for path in links:
            entry = zipfile.ZipInfo(f"{folder}{path}")
            entry.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(entry, "/etc/shadow")
    return SimpleUploadedFile("skill.zip", buffer.getvalue(), content_type="application/zip")


EXAMPLE = {
    "SKILL.md": SKILL_MD.encode(),
    "scripts/report.py": b"import sys\nprint('report of', sys.argv[1])\n",
    "references/format.md": b"# The report's format\n",
}


def upload(client: APIClient, archive: SimpleUploadedFile, url: str = URL):
    return client.post(url, {"archive": archive}, format="multipart")


def test_a_skill_laid_out_like_the_public_examples_uploads(api_client: APIClient, tenant: object) -> None:
    response = upload(api_client, zipped(EXAMPLE, folder="csv-report/"))

    assert response.status_code == 201, response.content
    skill = response.json()
    assert (skill["name"], skill["enabled"]) == ("csv-report", True)
    assert skill["description"].startswith("Summarises CSV files")
    assert [f["path"] for f in skill["current_version"]["files"]] == [
        "SKILL.md",
        "references/format.md",
        "scripts/report.py",
    ]
    assert api_client.get(f"{URL}/csv-report").json()["current_version"]["number"] == 1


def test_files_with_paths_and_new_versions_and_slash_commands(api_client: APIClient, tenant: object) -> None:
    body = {
        "file": [SimpleUploadedFile("SKILL.md", SKILL_MD.encode()), SimpleUploadedFile("r.py", b"print(1)\n")],
        "path": ["SKILL.md", "scripts/report.py"],
    }
    assert api_client.post(URL, body, format="multipart").status_code == 201
    second = upload(api_client, zipped({**EXAMPLE, "scripts/report.py": b"print(2)\n"}), f"{URL}/csv-report/versions")
    api_client.patch(f"{URL}/csv-report", {"slash_command": True, "title": "CSV report"}, format="json")

    assert second.status_code == 201 and second.json()["number"] == 2
    assert [v["number"] for v in api_client.get(f"{URL}/csv-report/versions").json()] == [2, 1]
    assert [s["name"] for s in api_client.get(f"{URL}/slash-commands").json()] == ["csv-report"]
    api_client.patch(f"{URL}/csv-report", {"enabled": False}, format="json")
    assert api_client.get(f"{URL}/slash-commands").json() == []


def test_another_tenants_skills_do_not_exist(
    api_client: APIClient, other_api_client: APIClient, tenant: object
) -> None:
    upload(api_client, zipped(EXAMPLE))

    assert error_of(other_api_client.get(f"{URL}/csv-report"), 404)
    assert error_of(other_api_client.get(URL), 404)
    assert error_of(upload(other_api_client, zipped(EXAMPLE)), 404)


@pytest.mark.parametrize(
    ("archive", "words"),
    [
        (lambda: zipped({"scripts/x.py": b"print(1)"}), "needs a SKILL.md"),
        (lambda: zipped({"SKILL.md": b"# no front matter"}), "YAML front matter"),
        (lambda: zipped({"SKILL.md": b"---\nname: Bad Name\ndescription: x\n---\n"}), "lowercase letters"),
        (lambda: zipped({"SKILL.md": b"---\nname: ok\n---\n"}), "`description`"),
        (lambda: zipped({**EXAMPLE, "../escape.sh": b"x"}), "escape.sh"),
        (lambda: zipped(EXAMPLE, links=("scripts/shadow",)), "symbolic link"),
        (lambda: zipped({**EXAMPLE, "data.bin": bytes(5 * 1024 * 1024)}), "fold"),
        (lambda: zipped({**EXAMPLE, "big.bin": bytes(20 * 1024 * 1024)}), "expands to"),
        (lambda: zipped({"SKILL.md": "---\nname: x\ndescription: é\n---\n".encode("latin-1")}), "not UTF-8"),
        (lambda: SimpleUploadedFile("skill.zip", b"not a zip"), "not a zip"),
    ],
    ids=[
        "no SKILL.md",
        "no front matter",
        "bad name",
        "no description",
        "dot-dot",
        "symlink",
        "zip bomb",
        "oversize",
        "latin-1",
        "not a zip",
    ],
)
def test_a_bad_upload_is_400_naming_the_problem_and_stores_nothing(
    api_client: APIClient, tenant: object, archive: object, words: str
) -> None:
    response = upload(api_client, archive())  # type: ignore[operator]

    assert words in error_of(response, 400)["message"]
    assert not Skill.objects.exists() and not SkillVersion.objects.exists()


def test_a_name_clash_is_400_and_keeps_the_first(api_client: APIClient, tenant: object) -> None:
    upload(api_client, zipped(EXAMPLE))

    response = upload(api_client, zipped({**EXAMPLE, "scripts/report.py": b"print('other')"}))

    assert "already has a skill named 'csv-report'" in error_of(response, 400)["message"]
    assert SkillVersion.objects.count() == 1
