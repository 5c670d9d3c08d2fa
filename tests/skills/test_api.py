"""Uploading, versioning and choosing a tenant's skills over REST; every bad upload is a 4xx naming the problem."""

import io
import stat
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from conversations.models import Conversation, Event, Run
from skills.archive import SkillContent, from_files
from skills.models import Skill, SkillVersion
from skills.services import create_skill
from tenants.models import Tenant
from tests.api.assertions import error_of, nothing_created

pytestmark = pytest.mark.django_db

SKILL_MD = """---
name: csv-report
description: Summarises CSV files into a short report. Use when the user brings a CSV.
---
# CSV report

Run `python3 scripts/report.py <file>` and show its output.
"""
URL = "/api/tenants/acme/skills"
CONVERSATIONS = "/api/tenants/acme/conversations"


@pytest.fixture(autouse=True)
def media(settings: Settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message's run is handed to a worker once committed; here it only has to be stored."""
    monkeypatch.setattr("runs.services.dispatch_run", lambda run_id: None)


def stored_files(media: Path) -> list[Path]:
    return [path for path in media.rglob("*") if path.is_file()]


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


SECOND = {
    **EXAMPLE,
    "SKILL.md": SKILL_MD.replace("Summarises CSV files", "Summarises CSV files, version two,").encode(),
    "scripts/report.py": b"print(2)\n",
}


def upload(client: APIClient, archive: SimpleUploadedFile, url: str = URL):
    return client.post(url, {"archive": archive}, format="multipart")


def a_skill(name: str) -> SkillContent:
    skill_md = f"---\nname: {name}\ndescription: The {name} skill.\n---\nDo the thing.\n"
    return from_files([("SKILL.md", skill_md.encode())])


def platform_skill(name: str, *, granted_to: Tenant | None = None, **fields: object) -> Skill:
    skill = create_skill(None, a_skill(name), "operator")
    Skill.objects.filter(pk=skill.pk).update(**fields)
    if granted_to is not None:
        skill.granted_to.add(granted_to)
    return skill


def test_a_skill_laid_out_like_the_public_examples_uploads(api_client: APIClient, tenant: object, media: Path) -> None:
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
    assert len(stored_files(media)) == 3


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
    api_client: APIClient, tenant: object, media: Path, archive: object, words: str
) -> None:
    response = upload(api_client, archive())  # type: ignore[operator]

    assert words in error_of(response, 400)["message"]
    assert not Skill.objects.exists() and not SkillVersion.objects.exists()
    assert stored_files(media) == []


def test_two_archives_are_400_and_store_nothing(api_client: APIClient, tenant: object, media: Path) -> None:
    body = {"archive": [zipped(EXAMPLE), zipped(SECOND)]}

    response = api_client.post(URL, body, format="multipart")

    assert error_of(response, 400)["fields"] == {"skill": ["Send one `archive`: a skill is one zip."]}
    assert not Skill.objects.exists() and stored_files(media) == []


def test_json_instead_of_a_multipart_upload_is_415_saying_what_to_send(api_client: APIClient, tenant: object) -> None:
    response = api_client.post(URL, {"archive": "x"}, format="json")

    assert error_of(response, 415)["message"] == (
        "Send the body as a multipart form, with Content-Type: multipart/form-data (not application/json)."
    )


def test_a_name_clash_is_400_and_keeps_the_first(api_client: APIClient, tenant: object) -> None:
    upload(api_client, zipped(EXAMPLE))

    response = upload(api_client, zipped({**EXAMPLE, "scripts/report.py": b"print('other')"}))

    assert "already has a skill named 'csv-report'" in error_of(response, 400)["message"]
    assert SkillVersion.objects.count() == 1


# --- versions -----------------------------------------------------------------------------------------


def test_a_version_is_read_by_its_number(api_client: APIClient, tenant: object) -> None:
    upload(api_client, zipped(EXAMPLE))
    upload(api_client, zipped(SECOND), f"{URL}/csv-report/versions")

    first = api_client.get(f"{URL}/csv-report/versions/1")
    second = api_client.get(f"{URL}/csv-report/versions/2")

    assert first.status_code == 200 and first.json()["number"] == 1
    assert first.json()["description"].startswith("Summarises CSV files into")
    assert {f["path"]: f["size"] for f in first.json()["files"]} == {path: len(b) for path, b in EXAMPLE.items()}
    assert second.json()["description"].startswith("Summarises CSV files, version two,")


def test_a_version_downloads_as_a_zip_of_its_folder_that_uploads_again_elsewhere(
    api_client: APIClient, other_api_client: APIClient, tenant: object
) -> None:
    uploaded = upload(api_client, zipped(EXAMPLE)).json()["current_version"]

    response = api_client.get(f"{URL}/csv-report/versions/1/download")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="csv-report-v1.zip"'
    downloaded = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(downloaded)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    assert entries == {f"csv-report/{path}": content for path, content in EXAMPLE.items()}
    again = upload(other_api_client, SimpleUploadedFile("csv-report-v1.zip", downloaded), "/api/tenants/globex/skills")
    assert again.status_code == 201, again.content
    assert again.json()["current_version"]["sha256"] == uploaded["sha256"]


def test_a_versions_file_is_served_as_uploaded(api_client: APIClient, tenant: object) -> None:
    upload(api_client, zipped(EXAMPLE))
    upload(api_client, zipped(SECOND), f"{URL}/csv-report/versions")

    first = api_client.get(f"{URL}/csv-report/versions/1/files/scripts/report.py")
    second = api_client.get(f"{URL}/csv-report/versions/2/files/scripts/report.py")

    assert first.status_code == 200
    assert b"".join(first.streaming_content) == EXAMPLE["scripts/report.py"]
    assert b"".join(second.streaming_content) == SECOND["scripts/report.py"]


@pytest.mark.parametrize(
    "path",
    [
        "/versions/3",
        "/versions/3/download",
        "/versions/3/files/SKILL.md",
        "/versions/1/files/scripts/missing.py",
        "/versions/one",
    ],
)
def test_an_unknown_version_or_file_is_404(api_client: APIClient, tenant: object, path: str) -> None:
    upload(api_client, zipped(EXAMPLE))

    assert error_of(api_client.get(f"{URL}/csv-report{path}"), 404)


def test_making_an_older_version_current_brings_back_its_description(api_client: APIClient, tenant: object) -> None:
    upload(api_client, zipped(EXAMPLE))
    upload(api_client, zipped(SECOND), f"{URL}/csv-report/versions")

    response = api_client.post(f"{URL}/csv-report/versions/1/make-current")

    assert response.status_code == 200, response.content
    assert response.json()["current_version"]["number"] == 1
    skill = Skill.objects.select_related("current_version").get(name="csv-report")
    assert skill.current_version is not None and skill.current_version.number == 1
    assert skill.description.startswith("Summarises CSV files into")
    assert [v["number"] for v in api_client.get(f"{URL}/csv-report/versions").json()] == [2, 1]


def test_another_tenants_versions_do_not_exist(
    api_client: APIClient, other_api_client: APIClient, tenant: object
) -> None:
    upload(api_client, zipped(EXAMPLE))
    upload(api_client, zipped(SECOND), f"{URL}/csv-report/versions")
    theirs = "/api/tenants/globex/skills/csv-report/versions"

    for path in ("", "/1", "/1/download", "/1/files/SKILL.md"):
        assert error_of(other_api_client.get(f"{URL}/csv-report/versions{path}"), 404)
        assert error_of(other_api_client.get(f"{theirs}{path}"), 404)
    assert error_of(other_api_client.post(f"{URL}/csv-report/versions/1/make-current"), 404)
    assert error_of(other_api_client.post(f"{theirs}/1/make-current"), 404)
    assert Skill.objects.filter(name="csv-report", current_version__number=2).exists()


# --- platform skills ----------------------------------------------------------------------------------


def test_granted_platform_skills_are_listed_as_platform_and_others_do_not_exist(
    api_client: APIClient, tenant: Tenant
) -> None:
    upload(api_client, zipped(EXAMPLE))
    platform_skill("style-guide", granted_to=tenant)
    platform_skill("for-everyone", all_tenants=True, granted_to=tenant)  # listed once all the same
    platform_skill("not-for-acme")

    listing = api_client.get(URL).json()

    assert [(s["name"], s["platform"]) for s in listing] == [
        ("csv-report", False),
        ("for-everyone", True),
        ("style-guide", True),
    ]
    assert api_client.get(f"{URL}/style-guide").json()["platform"] is True
    assert error_of(api_client.get(f"{URL}/not-for-acme"), 404)
    assert error_of(api_client.get(f"{URL}/not-for-acme/versions/1/download"), 404)


def test_a_platform_skill_is_read_only_for_a_tenant(api_client: APIClient, tenant: Tenant) -> None:
    skill = platform_skill("csv-report", granted_to=tenant)
    before = Skill.objects.filter(pk=skill.pk).values().get()

    refused = [
        api_client.patch(f"{URL}/csv-report", {"enabled": False, "title": "Ours"}, format="json"),
        api_client.delete(f"{URL}/csv-report"),
        upload(api_client, zipped(EXAMPLE), f"{URL}/csv-report/versions"),
        api_client.post(f"{URL}/csv-report/versions/1/make-current"),
    ]

    for response in refused:
        assert "platform skill" in error_of(response, 403)["message"]
    assert Skill.objects.filter(pk=skill.pk).values().get() == before
    assert SkillVersion.objects.filter(skill=skill).count() == 1


def test_a_tenants_own_skill_is_the_one_it_sees_where_a_platform_skill_shares_its_name(
    api_client: APIClient, tenant: Tenant
) -> None:
    platform_skill("csv-report", all_tenants=True)
    upload(api_client, zipped(EXAMPLE))

    listing = api_client.get(URL).json()
    own = api_client.get(f"{URL}/csv-report").json()

    assert [(s["name"], s["platform"]) for s in listing] == [("csv-report", False)]
    assert own["platform"] is False and own["description"].startswith("Summarises CSV files")
    assert api_client.patch(f"{URL}/csv-report", {"title": "Ours"}, format="json").status_code == 200


def test_slash_commands_include_granted_platform_ones(api_client: APIClient, tenant: Tenant) -> None:
    upload(api_client, zipped(EXAMPLE))
    api_client.patch(f"{URL}/csv-report", {"slash_command": True}, format="json")
    platform_skill("standup", all_tenants=True, slash_command=True)
    platform_skill("retro", granted_to=tenant, slash_command=True)
    platform_skill("not-for-acme", slash_command=True)
    platform_skill("not-a-command", all_tenants=True)
    platform_skill("switched-off", all_tenants=True, slash_command=True, enabled=False)

    commands = api_client.get(f"{URL}/slash-commands").json()

    assert [(c["name"], c["platform"]) for c in commands] == [
        ("csv-report", False),
        ("retro", True),
        ("standup", True),
    ]


# --- choosing a conversation's and a message's skills -------------------------------------------------


@pytest.fixture
def skills(api_client: APIClient, tenant: Tenant) -> None:
    """csv-report (a slash command), and policy, which end users cannot choose: it is always on."""
    upload(api_client, zipped(EXAMPLE))
    Skill.objects.filter(name="csv-report").update(slash_command=True)
    create_skill(tenant, a_skill("policy"), "test")
    Skill.objects.filter(name="policy").update(user_selectable=False)


def messages(conversation: Conversation) -> str:
    return f"{CONVERSATIONS}/{conversation.pk}/messages"


def test_a_conversation_with_an_unknown_skill_is_refused_naming_it_and_the_choices(
    api_client: APIClient, skills: None
) -> None:
    with nothing_created():
        response = api_client.post(CONVERSATIONS, {"skills": ["nope"]}, format="json")

    error = error_of(response, 400)
    assert error["code"] == "unknown_skill"
    assert "'nope'" in error["message"] and "Choose from: csv-report." in error["message"]


def test_a_conversation_keeps_the_skills_it_was_created_with(api_client: APIClient, skills: None) -> None:
    response = api_client.post(CONVERSATIONS, {"skills": ["csv-report"]}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["skills"] == ["csv-report"]
    assert Conversation.objects.get(pk=response.json()["id"]).skills == ["csv-report"]


def test_a_conversations_skills_change_only_to_known_ones_and_back_to_all(
    api_client: APIClient, skills: None, conversation: Conversation
) -> None:
    url = f"{CONVERSATIONS}/{conversation.pk}"

    chosen = api_client.patch(url, {"skills": ["csv-report"]}, format="json")
    refused = api_client.patch(url, {"skills": ["nope"]}, format="json")

    assert chosen.status_code == 200 and chosen.json()["skills"] == ["csv-report"]
    assert error_of(refused, 400)["code"] == "unknown_skill"
    conversation.refresh_from_db()
    assert conversation.skills == ["csv-report"]
    cleared = api_client.patch(url, {"skills": None}, format="json")
    assert cleared.status_code == 200 and cleared.json()["skills"] is None
    conversation.refresh_from_db()
    assert conversation.skills is None


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"text": "hi", "preferred_skills": ["nope"]}, "unknown_skill", "preferred_skills: no enabled skill"),
        ({"text": "hi", "skills": ["nope"]}, "unknown_skill", "Choose from: csv-report."),
        ({"text": "hi", "skills": ["policy"]}, "unknown_skill", "it is always on"),
        ({"text": "/nope"}, "unknown_command", "Commands: /csv-report."),
    ],
    ids=["unknown preferred", "unknown skill", "always on", "unknown command"],
)
def test_a_message_naming_a_skill_it_cannot_choose_is_refused_and_starts_no_run(
    api_client: APIClient, skills: None, conversation: Conversation, body: dict[str, object], code: str, words: str
) -> None:
    with nothing_created():
        response = api_client.post(messages(conversation), body, format="json")

    error = error_of(response, 400)
    assert (error["code"], words in error["message"]) == (code, True), error
    conversation.refresh_from_db()
    assert conversation.active_run_id is None


def test_a_slash_command_starts_a_run_that_keeps_the_conversations_skills(
    api_client: APIClient, skills: None, conversation: Conversation
) -> None:
    response = api_client.post(messages(conversation), {"text": "/csv-report x"}, format="json")

    assert response.status_code == 202, response.content
    queued = Event.objects.get(run_id=response.json()["id"], type="run.queued")
    assert (queued.data["skills"], queued.data["preferred_skills"]) == (None, [])


def test_a_message_narrows_and_prefers_skills_for_its_run(
    api_client: APIClient, skills: None, conversation: Conversation
) -> None:
    body = {"text": "hi", "skills": ["csv-report"], "preferred_skills": ["csv-report"]}

    response = api_client.post(messages(conversation), body, format="json")

    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert (run.skills, run.preferred_skills) == (["csv-report"], ["csv-report"])
    queued = Event.objects.get(run=run, type="run.queued")
    assert (queued.data["skills"], queued.data["preferred_skills"]) == (["csv-report"], ["csv-report"])


def test_skills_as_a_string_instead_of_a_list_is_400(
    api_client: APIClient, skills: None, conversation: Conversation
) -> None:
    with nothing_created():
        created = api_client.post(CONVERSATIONS, {"skills": "csv-report"}, format="json")
        changed = api_client.patch(f"{CONVERSATIONS}/{conversation.pk}", {"skills": "csv-report"}, format="json")
        sent = api_client.post(messages(conversation), {"text": "hi", "skills": "csv-report"}, format="json")

    for response in (created, changed, sent):
        assert "skills" in error_of(response, 400)["fields"]
    conversation.refresh_from_db()
    assert conversation.skills is None
