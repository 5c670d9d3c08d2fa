"""Reading an uploaded skill (a zip, or files with relative paths) into checked files, or saying what to fix.

A zip is judged by its directory before anything is expanded: entry count, declared sizes and each
entry's compression ratio (a zip bomb is refused unopened), no links or special files, no path that
leaves the skill's folder. Then each entry is read with a bound, in case its header lied.
"""

import re
import stat
import zipfile
from collections.abc import Set
from dataclasses import dataclass
from typing import IO, Any

import yaml

from workspaces.sync import valid_path

NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
MAX_DESCRIPTION = 1024
MAX_FILES = 200
MAX_BYTES = 10 * 1024 * 1024
MAX_RATIO = 100  # uncompressed / compressed, per entry
TEXT_SUFFIXES = (".md", ".txt", ".py", ".sh", ".js", ".ts", ".json", ".yaml", ".yml", ".toml", ".csv", ".html", ".css")


class SkillProblem(ValueError):
    """What is wrong with an upload, in words for whoever uploaded it."""


@dataclass(frozen=True)
class SkillFile:
    path: str
    content: bytes
    executable: bool = False  # placed runnable in the sandbox: marked so in the zip, or starts with `#!`


@dataclass(frozen=True)
class SkillContent:
    name: str
    description: str
    files: list[SkillFile]

    @property
    def size(self) -> int:
        return sum(len(f.content) for f in self.files)


def from_zip(upload: IO[bytes]) -> SkillContent:
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SkillProblem(f"The upload is not a zip archive ({exc}).") from None
    with archive:
        entries = [entry for entry in archive.infolist() if not entry.is_dir()]
        if len(entries) > MAX_FILES:
            raise SkillProblem(f"The archive has {len(entries)} files; a skill may have at most {MAX_FILES}.")
        declared = sum(entry.file_size for entry in entries)
        if declared > MAX_BYTES:
            raise SkillProblem(f"The archive expands to {declared:,} bytes; a skill may have at most {MAX_BYTES:,}.")
        for entry in entries:
            mode = entry.external_attr >> 16
            # Archivers that record no file type (Python's own, Windows tools) leave these bits at 0.
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise SkillProblem(f"{entry.filename!r} is {kind}; a skill holds regular files only.")
            if entry.file_size > MAX_RATIO * max(entry.compress_size, 1) and entry.file_size > 1024 * 1024:
                raise SkillProblem(
                    f"{entry.filename!r} expands {entry.file_size // max(entry.compress_size, 1)}-fold; "
                    f"more than {MAX_RATIO}-fold is refused (a zip bomb?)."
                )
        files = []
        executables = {entry.filename for entry in entries if (entry.external_attr >> 16) & 0o111}
        for entry in entries:
            with archive.open(entry) as source:
                content = source.read(entry.file_size + 1)
            if len(content) != entry.file_size:
                raise SkillProblem(f"{entry.filename!r} is not the size its header says.")
            files.append((entry.filename, content))
    folder = _common_folder(files)
    return from_files(
        [(path.removeprefix(folder), content) for path, content in files],
        executables={path.removeprefix(folder) for path in executables},
    )


def from_files(files: list[tuple[str, bytes]], executables: Set[str] = frozenset()) -> SkillContent:
    """Checked files (relative path, content) of a skill, with its name and description from `SKILL.md`."""
    if len(files) > MAX_FILES:
        raise SkillProblem(f"A skill may have at most {MAX_FILES} files; this one has {len(files)}.")
    if sum(len(content) for _, content in files) > MAX_BYTES:
        raise SkillProblem(f"A skill may have at most {MAX_BYTES:,} bytes.")
    checked: dict[str, SkillFile] = {}
    for path, content in files:
        if reason := valid_path(path):
            raise SkillProblem(f"{path!r}: {reason}")
        if path in checked:
            raise SkillProblem(f"{path!r} appears twice.")
        if path.lower().endswith(TEXT_SUFFIXES):
            try:
                content.decode("utf-8")
            except UnicodeDecodeError:
                raise SkillProblem(f"{path!r} is not UTF-8 text.") from None
        checked[path] = SkillFile(path, content, executable=path in executables or content.startswith(b"#!"))
    if "SKILL.md" not in checked:
        raise SkillProblem("A skill needs a SKILL.md at its root (beside its scripts/ and references/).")
    name, description = front_matter(checked["SKILL.md"].content.decode("utf-8"))
    return SkillContent(name, description, sorted(checked.values(), key=lambda f: f.path))


def front_matter(text: str) -> tuple[str, str]:
    """`name` and `description` from SKILL.md's YAML front matter."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        raise SkillProblem("SKILL.md must start with YAML front matter between `---` lines (name, description).")
    try:
        meta: Any = yaml.safe_load(match[1])
    except yaml.YAMLError as exc:
        raise SkillProblem(f"SKILL.md's front matter is not valid YAML: {exc}.") from None
    if not isinstance(meta, dict):
        raise SkillProblem("SKILL.md's front matter must be a mapping with name and description.")
    name, description = meta.get("name"), meta.get("description")
    if not isinstance(name, str) or not NAME.match(name):
        raise SkillProblem("SKILL.md's `name` must be 1-64 lowercase letters, digits and hyphens, e.g. `pdf-tools`.")
    if not isinstance(description, str) or not description.strip() or len(description) > MAX_DESCRIPTION:
        raise SkillProblem(f"SKILL.md's `description` must be 1-{MAX_DESCRIPTION} characters.")
    return name, description.strip()


def _common_folder(files: list[tuple[str, bytes]]) -> str:
    """`my-skill/` for `my-skill/SKILL.md, my-skill/scripts/x` (a zipped folder, as usual), else ""."""
    tops = {path.split("/", 1)[0] for path, _ in files}
    if len(tops) == 1 and all("/" in path for path, _ in files):
        return f"{tops.pop()}/"
    return ""
