"""Storing skills: each file once per checksum under `tenants/<t>/skills/<name>/files/`, a version as its list."""

import hashlib
import io
import json

from django.core.files import File
from django.core.files.storage import storages
from django.db import transaction
from django.db.models import Max

from skills.archive import SkillContent, SkillProblem
from skills.models import Skill, SkillVersion
from tenants.models import Tenant


def file_key(skill: Skill, sha256: str) -> str:
    return f"tenants/{skill.tenant_id}/skills/{skill.name}/files/{sha256}"


def create_skill(tenant: Tenant, content: SkillContent, uploaded_by: str) -> Skill:
    """A new skill of the tenant with its first version; refused when the name is taken."""
    with transaction.atomic():
        if Skill.objects.filter(tenant=tenant, name=content.name).exists():
            raise SkillProblem(f"The tenant already has a skill named {content.name!r}; upload a new version of it.")
        skill = Skill.objects.create(tenant=tenant, name=content.name, description=content.description)
        add_version(skill, content, uploaded_by)
    return Skill.objects.select_related("current_version").get(pk=skill.pk)


def add_version(skill: Skill, content: SkillContent, uploaded_by: str) -> SkillVersion:
    """Store the files and make them the skill's next, current version."""
    if content.name != skill.name:
        raise SkillProblem(f"SKILL.md names {content.name!r}; this skill is {skill.name!r}.")
    listing = []
    backend = storages["default"]
    for skill_file in content.files:
        sha256 = hashlib.sha256(skill_file.content).hexdigest()
        key = file_key(skill, sha256)
        if not backend.exists(key):
            backend.save(key, File(io.BytesIO(skill_file.content)))
        listing.append({"path": skill_file.path, "size": len(skill_file.content), "sha256": sha256})
    with transaction.atomic():
        locked = Skill.objects.select_for_update().get(pk=skill.pk)
        number = (locked.versions.aggregate(last=Max("number"))["last"] or 0) + 1
        version = SkillVersion.objects.create(
            skill=locked,
            number=number,
            description=content.description,
            files=listing,
            size=content.size,
            sha256=hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest(),
            uploaded_by=uploaded_by,
        )
        locked.current_version = version
        locked.description = content.description
        locked.save(update_fields=["current_version", "description", "updated_at"])
    return version
