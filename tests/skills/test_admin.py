"""The operator admin of skills: zips uploaded as skills and versions, downloaded back, rolled back by a POST."""

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from skills import archive, services
from skills.models import Skill, SkillVersion
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

SKILL_MD = """---
name: csv-report
description: Summarises CSV files into a short report. Use when the user brings a CSV.
---
# CSV report

Run `python3 scripts/report.py <file>` and show its output.
"""
EXAMPLE = {
    "SKILL.md": SKILL_MD.encode(),
    "scripts/report.py": b"import sys\nprint('report of', sys.argv[1])\n",
}
# The inline of versions is read-only: the change form posts its management form with no rows.
NO_VERSION_ROWS = {
    "versions-TOTAL_FORMS": "0",
    "versions-INITIAL_FORMS": "0",
    "versions-MIN_NUM_FORMS": "0",
    "versions-MAX_NUM_FORMS": "1000",
}


@pytest.fixture(autouse=True)
def media(settings: Settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


def zipped(files: dict[str, bytes], *, folder: str = "csv-report/") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as skill_zip:
        for path, content in files.items():
            skill_zip.writestr(f"{folder}{path}", content)
    return SimpleUploadedFile("skill.zip", buffer.getvalue(), content_type="application/zip")


@pytest.fixture
def make_skill() -> Callable[..., Skill]:
    """A skill stored through the service, with as many versions as asked (each a different script)."""

    def make(tenant: Tenant | None, versions: int = 1) -> Skill:
        def content(n: int) -> archive.SkillContent:
            return archive.from_files([*EXAMPLE.items(), ("scripts/version.txt", f"{n}\n".encode())])

        skill = services.create_skill(tenant, content(1), uploaded_by="test")
        for n in range(2, versions + 1):
            services.add_version(skill, content(n), uploaded_by="test")
        return Skill.objects.select_related("current_version").get(pk=skill.pk)

    return make


def change_form(skill: Skill, **fields: Any) -> dict[str, Any]:
    """What the change form posts when the operator leaves everything as it is, but `fields`."""
    data: dict[str, Any] = {
        "title": skill.title,
        "enabled": "on" if skill.enabled else "",
        "user_selectable": "on" if skill.user_selectable else "",
        "slash_command": "on" if skill.slash_command else "",
        **NO_VERSION_ROWS,
    }
    if skill.is_platform:
        data["all_tenants"] = "on" if skill.all_tenants else ""
        data["granted_to"] = [tenant.pk for tenant in skill.granted_to.all()]
    return {name: value for name, value in {**data, **fields}.items() if value != ""}


def form_errors(response: Any) -> dict[str, list[str]]:
    return response.context["adminform"].form.errors


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- Pages ----------------------------------------------------------------------------------------


def test_changelist_add_and_change_pages_render(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    own, platform = make_skill(tenant), make_skill(None)

    for page in (
        url("skills_skill_changelist"),
        url("skills_skill_changelist") + "?platform=yes",
        url("skills_skill_changelist") + "?q=csv",
        url("skills_skill_add"),
        url("skills_skill_change", own.pk),
        url("skills_skill_change", platform.pk),
    ):
        assert admin_client.get(page).status_code == 200, page


def test_changelist_shows_platform_skills_and_current_versions(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    make_skill(tenant, versions=2)
    make_skill(None)

    response = admin_client.get(url("skills_skill_changelist"))

    admin = response.context["cl"].model_admin
    rows = [(admin.owner(skill), admin.version(skill)) for skill in response.context["cl"].result_list]
    assert sorted(rows) == [("Acme (acme)", 2), ("platform", 1)]


def test_only_platform_skills_are_granted_on_their_change_page(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    own, platform = make_skill(tenant), make_skill(None)

    own_form = admin_client.get(url("skills_skill_change", own.pk)).context["adminform"].form
    platform_form = admin_client.get(url("skills_skill_change", platform.pk)).context["adminform"].form

    assert "granted_to" not in own_form.fields and "all_tenants" not in own_form.fields
    assert {"granted_to", "all_tenants", "new_version_zip"} <= set(platform_form.fields)


# --- Adding a skill -------------------------------------------------------------------------------


def test_operator_adds_a_tenant_skill_by_uploading_its_zip(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.post(url("skills_skill_add"), {"tenant": tenant.pk, "zip_file": zipped(EXAMPLE)})

    assert response.status_code == 302
    skill = Skill.objects.select_related("current_version").get()
    assert (skill.tenant_id, skill.name) == ("acme", "csv-report")
    assert skill.description.startswith("Summarises CSV files")
    assert skill.current_version is not None
    assert (skill.current_version.number, skill.current_version.uploaded_by) == (1, "admin admin")
    assert [f["path"] for f in skill.current_version.files] == ["SKILL.md", "scripts/report.py"]


def test_operator_adds_a_platform_skill_by_leaving_the_tenant_empty(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.post(url("skills_skill_add"), {"tenant": "", "zip_file": zipped(EXAMPLE)})

    assert response.status_code == 302
    skill = Skill.objects.get()
    assert skill.is_platform and skill.name == "csv-report"
    assert not Skill.objects.available_to(tenant).exists()  # granted to no tenant yet


def test_a_zip_without_skill_md_is_a_form_error_and_stores_nothing(
    admin_client: Client, tenant: Tenant, media: Path
) -> None:
    response = admin_client.post(
        url("skills_skill_add"), {"tenant": tenant.pk, "zip_file": zipped({"scripts/report.py": b"print(1)\n"})}
    )

    assert response.status_code == 200
    assert "needs a SKILL.md" in form_errors(response)["zip_file"][0]
    assert not Skill.objects.exists() and not SkillVersion.objects.exists()
    assert not media.exists() or not any(path.is_file() for path in media.rglob("*"))


def test_a_name_the_tenant_already_has_is_a_form_error(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    make_skill(tenant)

    response = admin_client.post(url("skills_skill_add"), {"tenant": tenant.pk, "zip_file": zipped(EXAMPLE)})

    assert response.status_code == 200
    assert "already has a skill named 'csv-report'" in form_errors(response)["zip_file"][0]
    assert SkillVersion.objects.count() == 1


def test_the_zip_is_required(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.post(url("skills_skill_add"), {"tenant": tenant.pk})

    assert response.status_code == 200
    assert "zip_file" in form_errors(response)
    assert not Skill.objects.exists()


# --- Changing a skill -----------------------------------------------------------------------------


def test_uploading_a_new_version_from_the_change_form_makes_it_current(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(tenant)
    new_zip = zipped({**EXAMPLE, "scripts/report.py": b"print('v2')\n"})

    response = admin_client.post(
        url("skills_skill_change", skill.pk), change_form(skill, title="CSV report", new_version_zip=new_zip)
    )

    assert response.status_code == 302, form_errors(response)
    skill.refresh_from_db()
    assert skill.title == "CSV report"
    assert skill.current_version is not None
    assert (skill.current_version.number, skill.current_version.uploaded_by) == (2, "admin admin")
    assert "Uploaded version 2; it is now current." in messages_of(response)


def test_saving_the_change_form_without_an_upload_keeps_the_current_version(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(tenant, versions=2)

    response = admin_client.post(
        url("skills_skill_change", skill.pk), change_form(skill, enabled="", slash_command="on")
    )

    assert response.status_code == 302, form_errors(response)
    skill.refresh_from_db()
    assert (skill.enabled, skill.slash_command) == (False, True)
    assert skill.current_version is not None and skill.current_version.number == 2


def test_a_new_version_that_names_another_skill_is_a_form_error(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(tenant)
    other = zipped({"SKILL.md": SKILL_MD.replace("csv-report", "pdf-tools").encode()})

    response = admin_client.post(
        url("skills_skill_change", skill.pk), change_form(skill, title="Changed", new_version_zip=other)
    )

    assert response.status_code == 200
    assert "names 'pdf-tools'" in form_errors(response)["new_version_zip"][0]
    skill.refresh_from_db()
    assert (skill.title, skill.versions.count()) == ("", 1)


def test_operator_grants_a_platform_skill_to_chosen_tenants(
    admin_client: Client, tenant: Tenant, other_tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(None)

    response = admin_client.post(url("skills_skill_change", skill.pk), change_form(skill, granted_to=[tenant.pk]))

    assert response.status_code == 302, form_errors(response)
    assert list(Skill.objects.available_to(tenant)) == [skill]
    assert not Skill.objects.available_to(other_tenant).exists()


def test_operator_grants_a_platform_skill_to_every_tenant(
    admin_client: Client, tenant: Tenant, other_tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(None)

    admin_client.post(url("skills_skill_change", skill.pk), change_form(skill, all_tenants="on"))

    assert list(Skill.objects.available_to(tenant)) == list(Skill.objects.available_to(other_tenant)) == [skill]


def test_operator_deletes_a_skill_with_its_versions(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(tenant, versions=2)

    response = admin_client.post(url("skills_skill_delete", skill.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not Skill.objects.exists() and not SkillVersion.objects.exists()


# --- Versions: download, make current -------------------------------------------------------------


def test_download_returns_the_version_as_a_zip_of_its_folder(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(tenant, versions=2)
    first = skill.versions.get(number=1)

    response = admin_client.get(url("skills_skill_version_zip", skill.pk, first.pk))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="csv-report-v1.zip"'
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as downloaded:  # type: ignore[attr-defined]
        assert sorted(downloaded.namelist()) == [
            "csv-report/SKILL.md",
            "csv-report/scripts/report.py",
            "csv-report/scripts/version.txt",
        ]
        assert downloaded.read("csv-report/SKILL.md") == SKILL_MD.encode()
        assert downloaded.read("csv-report/scripts/version.txt") == b"1\n"


def test_the_change_page_offers_make_current_for_the_other_versions_only(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(tenant, versions=2)
    first, second = skill.versions.get(number=1), skill.versions.get(number=2)

    page = admin_client.get(url("skills_skill_change", skill.pk)).content.decode()

    assert url("skills_skill_make_current", skill.pk, first.pk) in page
    assert url("skills_skill_make_current", skill.pk, second.pk) not in page
    assert url("skills_skill_version_zip", skill.pk, second.pk) in page


def test_make_current_by_post_switches_the_current_version(
    admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(tenant, versions=2)
    first = skill.versions.get(number=1)

    response = admin_client.post(url("skills_skill_make_current", skill.pk, first.pk))

    assert response.status_code == 302
    assert response["Location"] == url("skills_skill_change", skill.pk)
    skill.refresh_from_db()
    assert skill.current_version_id == first.pk
    assert "csv-report: Made version 1 current." in messages_of(response)


def test_make_current_refuses_get(admin_client: Client, tenant: Tenant, make_skill: Callable[..., Skill]) -> None:
    skill = make_skill(tenant, versions=2)
    first = skill.versions.get(number=1)

    response = admin_client.get(url("skills_skill_make_current", skill.pk, first.pk))

    assert response.status_code == 405
    skill.refresh_from_db()
    assert skill.current_version is not None and skill.current_version.number == 2


def test_make_current_without_the_csrf_token_is_refused(
    admin_user: User, tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(tenant, versions=2)
    first = skill.versions.get(number=1)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    response = client.post(url("skills_skill_make_current", skill.pk, first.pk))

    assert response.status_code == 403
    skill.refresh_from_db()
    assert skill.current_version is not None and skill.current_version.number == 2


def test_another_skills_version_is_404(
    admin_client: Client, tenant: Tenant, other_tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill, other = make_skill(tenant, versions=2), make_skill(other_tenant)
    others_version = other.versions.get()

    download = admin_client.get(url("skills_skill_version_zip", skill.pk, others_version.pk))
    make_current = admin_client.post(url("skills_skill_make_current", skill.pk, others_version.pk))

    assert (download.status_code, make_current.status_code) == (404, 404)
    skill.refresh_from_db()
    assert skill.current_version is not None and skill.current_version.number == 2


def test_staff_who_may_only_view_skills_see_them_but_neither_download_nor_make_current(
    client: Client, django_user_model: type[User], tenant: Tenant, make_skill: Callable[..., Skill]
) -> None:
    skill = make_skill(tenant, versions=2)
    first = skill.versions.get(number=1)
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_skill"))
    client.force_login(viewer)

    page = client.get(url("skills_skill_change", skill.pk))
    download = client.get(url("skills_skill_version_zip", skill.pk, first.pk))
    make_current = client.post(url("skills_skill_make_current", skill.pk, first.pk))

    assert page.status_code == 200
    assert (download.status_code, make_current.status_code) == (403, 403)
    skill.refresh_from_db()
    assert skill.current_version is not None and skill.current_version.number == 2
