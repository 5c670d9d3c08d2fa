"""Storing skills and choosing a run's: files once per checksum under the skill's prefix, a version as its list."""

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from django.db import transaction
from django.db.models import Max

from skills.archive import SkillContent, SkillProblem
from skills.models import Skill, SkillVersion
from tenants.models import Tenant
from tenants.storage import delete_object, delete_quietly, delete_tree, open_object, put_object

# `/name` or `/name arguments`: how a message invokes a skill.
SLASH_COMMAND = re.compile(r"^/([a-z0-9][a-z0-9-]{0,63})(?:\s|$)")


def create_skill(tenant: Tenant | None, content: SkillContent, uploaded_by: str) -> Skill:
    """A new skill of the tenant (a platform skill without one) with its first version; refused when the name is taken."""
    with transaction.atomic():
        if Skill.objects.filter(tenant=tenant, name=content.name).exists():
            owner = "The tenant" if tenant else "The platform"
            raise SkillProblem(f"{owner} already has a skill named {content.name!r}; upload a new version of it.")
        skill = Skill.objects.create(tenant=tenant, name=content.name, description=content.description)
        add_version(skill, content, uploaded_by)
    return Skill.objects.select_related("current_version").get(pk=skill.pk)


def add_version(skill: Skill, content: SkillContent, uploaded_by: str) -> SkillVersion:
    """Store the files and make them the skill's next, current version."""
    if content.name != skill.name:
        raise SkillProblem(f"SKILL.md names {content.name!r}; this skill is {skill.name!r}.")
    listing = [
        {
            "path": skill_file.path,
            "size": len(skill_file.content),
            "sha256": hashlib.sha256(skill_file.content).hexdigest(),
            "executable": skill_file.executable,
        }
        for skill_file in content.files
    ]
    with transaction.atomic():
        # The files are stored under the skill's lock: a version being deleted at the same moment
        # removes only checksums that no version lists once it holds the lock (`_delete_unlisted_files`).
        locked = Skill.objects.select_for_update().get(pk=skill.pk)
        for skill_file, entry in zip(content.files, listing, strict=True):
            put_object(skill.file_key(str(entry["sha256"])), io.BytesIO(skill_file.content), len(skill_file.content))
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


def delete_skill(skill: Skill) -> None:
    """Delete the skill with every version, then (once committed) its stored files. Runs under way keep their copy."""
    prefix = skill.storage_prefix  # read now: the instance forgets its pk when its row is deleted
    with transaction.atomic():
        Skill.objects.filter(pk=skill.pk).delete()
        transaction.on_commit(lambda: delete_quietly(delete_tree, prefix))


def delete_version(version: SkillVersion) -> None:
    """Delete an old version and the files no other version of its skill lists; the current one is refused."""
    with transaction.atomic():
        skill = Skill.objects.select_for_update().get(pk=version.skill_id)
        if skill.current_version_id == version.pk:
            raise SkillProblem(
                f"Version {version.number} is the current version of {skill.name!r}; "
                "make another version current first."
            )
        checksums = {str(entry["sha256"]) for entry in version.files}
        SkillVersion.objects.filter(pk=version.pk).delete()
        skill_id = skill.pk
        transaction.on_commit(lambda: delete_quietly(_delete_unlisted_files, skill_id, checksums))


def _delete_unlisted_files(skill_id: int, checksums: set[str]) -> None:
    """Of `checksums`, delete the files no version of the skill lists, under its lock (see `add_version`)."""
    with transaction.atomic():
        skill = Skill.objects.select_for_update().filter(pk=skill_id).first()
        if skill is None:  # deleted meanwhile, with its whole folder
            return
        listed = {str(entry["sha256"]) for files in skill.versions.values_list("files", flat=True) for entry in files}
        for sha256 in sorted(checksums - listed):
            delete_object(skill.file_key(sha256))


def make_current(version: SkillVersion) -> Skill:
    """Run this version again from now on (an older one, to undo an upload)."""
    with transaction.atomic():
        skill = Skill.objects.select_for_update().get(pk=version.skill_id)
        skill.current_version = version
        skill.description = version.description
        skill.save(update_fields=["current_version", "description", "updated_at"])
    return Skill.objects.select_related("current_version").get(pk=skill.pk)


def open_file(version: SkillVersion, entry: dict[str, object]) -> IO[bytes]:
    """One file of the version (an entry of its `files`), streamed from storage."""
    return open_object(version.skill.file_key(str(entry["sha256"])))


def version_zip(version: SkillVersion) -> Iterator[bytes]:
    """The version as a zip of its folder (`<name>/SKILL.md`, …), as it was uploaded."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in version.files:
            info = zipfile.ZipInfo(f"{version.skill.name}/{entry['path']}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if entry.get("executable") else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open_file(version, entry) as source:
                archive.writestr(info, source.read())
    yield buffer.getvalue()


# --- A run's skills -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSkills:
    """What a run gets: the versions placed in its sandbox, and those the agent is told to use first."""

    versions: list[SkillVersion]
    preferred: list[str]

    def summary(self) -> list[dict[str, object]]:
        return [{"name": v.skill.name, "version": v.number, "platform": v.skill.is_platform} for v in self.versions]


def enabled_skills(tenant: Tenant) -> dict[str, Skill]:
    """The tenant's usable skills by name: its own enabled ones, and the enabled platform skills granted to it
    (its own win a name they share, even when disabled)."""
    seen = Skill.objects.select_related("current_version").by_name(tenant)
    return {name: skill for name, skill in seen.items() if skill.enabled and skill.current_version_id is not None}


def check_selection(tenant: Tenant, names: Iterable[str], what: str) -> list[str]:
    """Names of enabled skills the tenant's end users may choose, or SkillProblem naming what to fix."""
    chosen = list(dict.fromkeys(names))
    if not chosen:
        return []
    available = enabled_skills(tenant)
    for name in chosen:
        skill = available.get(name)
        if skill is None:
            choices = ", ".join(sorted(n for n, s in available.items() if s.user_selectable)) or "none"
            raise SkillProblem(f"{what}: no enabled skill is named {name!r}. Choose from: {choices}.")
        if not skill.user_selectable:
            raise SkillProblem(f"{what}: the skill {name!r} is not one end users choose; it is always on.")
    return chosen


def check_command(tenant: Tenant, text: str) -> None:
    """A message that starts with `/name` must name one of the tenant's enabled slash-command skills."""
    match = SLASH_COMMAND.match(text)
    if match is None:
        return
    available = enabled_skills(tenant)
    skill = available.get(match[1])
    if skill is None or not skill.slash_command:
        commands = sorted(f"/{n}" for n, s in available.items() if s.slash_command)
        raise SkillProblem(
            f"/{match[1]} is not a command here. Commands: {', '.join(commands) or 'none'}. "
            "To send text that starts with '/', put a space before it."
        )


def run_skills(
    tenant: Tenant,
    conversation_choice: list[str] | None,
    message_choice: list[str] | None,
    preferred: list[str],
    text: str,
) -> RunSkills:
    """The skills a run gets: the enabled ones end users cannot choose, always; of the others, the message's
    choice, else the conversation's, else all; plus the preferred ones and a `/name` the message invokes.

    A name that is no longer enabled (a choice stored before the skill was disabled) is left out."""
    available = enabled_skills(tenant)
    choice = message_choice if message_choice is not None else conversation_choice
    wanted = set(available) if choice is None else {*choice, *preferred}
    command = SLASH_COMMAND.match(text)
    if command is not None and command[1] in available and available[command[1]].slash_command:
        wanted.add(command[1])
    versions = []
    for name, skill in sorted(available.items()):
        if (name in wanted or not skill.user_selectable) and skill.current_version is not None:
            skill.current_version.skill = skill  # already loaded: no query per version
            versions.append(skill.current_version)
    names = {version.skill.name for version in versions}
    return RunSkills(versions, [name for name in preferred if name in names])
