"""Placing a run's skills on its worker, read-only, outside the workspace.

Each skill version is expanded once per worker under `RUN_ROOT/skills/<sha256>` (files checked against
their checksums, nothing writable), and each run gets a folder of hard links to those files, one
sub-folder per skill name: a few system calls per file, however big the skill. The sandbox mounts
that folder read-only where the CLI looks for skills; the least recently used versions leave the cache
past SKILL_CACHE_MB, while runs that have them placed keep their links.
"""

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings

from skills.models import SkillVersion
from skills.services import open_file

logger = logging.getLogger(__name__)

FETCH_THREADS = 4  # per version
VERSION_THREADS = 4  # versions fetched side by side, each with its own FETCH_THREADS
READ_ONLY_DIR, READ_ONLY_FILE, RUNNABLE_FILE = 0o555, 0o444, 0o555


class SkillsUnavailable(Exception):
    """A skill's stored files are missing or not what their checksums say; the message names the skill."""


def cache_root() -> Path:
    return settings.RUN_ROOT / "skills"


def place_skills(versions: list[SkillVersion], target: Path) -> None:
    """Give `target` (which must not exist) one read-only folder per skill, linked from the worker's cache."""
    target.mkdir(mode=0o755, parents=True)
    skills = [version.skill for version in versions]  # loaded here, not in the threads
    # Versions new to this worker are fetched side by side (a cold start is bound by storage round trips).
    with ThreadPoolExecutor(min(VERSION_THREADS, len(versions) or 1)) as pool:
        cached = list(pool.map(cached_version, versions))
    for skill, source in zip(skills, cached, strict=True):
        _link_tree(source, target / skill.name)
    target.chmod(READ_ONLY_DIR)


def cached_version(version: SkillVersion) -> Path:
    """The version expanded in the worker's cache, fetched from storage the first time."""
    root = cache_root()
    path = root / version.sha256
    if path.is_dir():
        os.utime(path)  # recently used
        return path
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{version.sha256[:16]}-"))
    label = f"Skill {version.skill.name!r} v{version.number}"  # loads the skill here, not in the threads
    try:
        with ThreadPoolExecutor(min(FETCH_THREADS, len(version.files) or 1)) as pool:
            for _ in pool.map(lambda entry: _fetch(version, entry, staging, label), version.files):
                pass
        _seal(staging)
        try:
            staging.rename(path)
        except OSError:  # another run of this worker placed it first
            if not path.is_dir():
                raise
    finally:
        if staging.exists():
            _remove(staging)
    prune_cache(keep=path)
    return path


def prune_cache(keep: Path) -> None:
    """Drop the least recently used versions until the cache fits SKILL_CACHE_MB (never `keep`)."""
    limit = settings.SKILL_CACHE_MB * 1024 * 1024
    entries = []
    for entry in cache_root().iterdir():
        if entry.name.startswith(".") or entry == keep:
            continue
        with_size = sum(f.stat().st_size for f in _files(entry))
        entries.append((entry.stat().st_mtime, with_size, entry))
    total = sum(size for _, size, _ in entries) + sum(f.stat().st_size for f in _files(keep))
    for _, size, entry in sorted(entries):
        if total <= limit:
            break
        logger.info("Skill cache over %s MB: dropping %s", settings.SKILL_CACHE_MB, entry.name)
        _remove(entry)
        total -= size


def _fetch(version: SkillVersion, entry: dict[str, object], staging: Path, label: str) -> None:
    destination = staging / str(entry["path"])
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with open_file(version, entry) as source, destination.open("wb") as sink:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
                sink.write(chunk)
    except FileNotFoundError:
        raise SkillsUnavailable(f"{label}: {entry['path']} is missing from storage.") from None
    if digest.hexdigest() != entry["sha256"]:
        raise SkillsUnavailable(f"{label}: {entry['path']} does not match its checksum.")
    destination.chmod(RUNNABLE_FILE if entry.get("executable") else READ_ONLY_FILE)


def _link_tree(source: Path, target: Path) -> None:
    """`target` as a tree of hard links to `source`'s files, its folders read-only."""
    made = []
    for directory, _, names in os.walk(source):
        inside = target / Path(directory).relative_to(source)
        inside.mkdir()
        made.append(inside)
        for name in names:
            os.link(Path(directory) / name, inside / name)
    for folder in reversed(made):
        folder.chmod(READ_ONLY_DIR)


def _seal(root: Path) -> None:
    for folder, _, _ in os.walk(root, topdown=False):
        Path(folder).chmod(READ_ONLY_DIR)


def _files(root: Path) -> Iterator[Path]:
    for directory, _, names in os.walk(root):
        for name in names:
            yield Path(directory) / name


def _remove(root: Path) -> None:
    """Delete a read-only tree (its folders need write permission back first)."""
    for directory, _, _ in os.walk(root):
        Path(directory).chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)
