"""Moving a conversation's files between storage and the directory a run sees as /workspace.

This code runs as the worker, on a directory the agent controls, while the agent may still be
writing to it. So it never follows a link: every directory is opened relative to its parent with
O_NOFOLLOW, only regular files with a single link are read (never a symlink, hard link, FIFO, socket
or device), each through the descriptor it checked, and never past the size limit. What it skips
it reports.
"""

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

CHUNK = 1024 * 1024
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
MAX_PATH = 1024
# Opens the stored content of a checksum (workspaces.services gives one for a conversation).
ContentOpener = Callable[[str], IO[bytes]]


@dataclass(frozen=True)
class Limits:
    file_bytes: int
    total_bytes: int
    files: int


@dataclass(frozen=True)
class Seen:
    """What a path held when it was last synced: enough to know, without reading it, that it did not change."""

    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class Change:
    path: str
    change: str  # "created", "modified" or "deleted"
    size: int = 0
    sha256: str = ""
    staged: str = ""  # a private copy of the content, for the upload


@dataclass
class Scan:
    changes: list[Change] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path → why it was not synced


class Manifest:
    """What the workspace held after the last sync, by path; kept beside it, out of the agent's reach."""

    def __init__(self, location: Path, entries: dict[str, Seen] | None = None) -> None:
        self.location = location
        self.entries = entries or {}

    @classmethod
    def load(cls, location: Path) -> "Manifest":
        try:
            raw = json.loads(location.read_text())
            return cls(location, {path: Seen(**seen) for path, seen in raw.items()})
        except (OSError, ValueError, TypeError):
            return cls(location)

    def save(self) -> None:
        self.location.parent.mkdir(parents=True, exist_ok=True)
        staging = self.location.with_suffix(".tmp")
        staging.write_text(json.dumps({path: asdict(seen) for path, seen in self.entries.items()}))
        staging.replace(self.location)


def valid_path(path: str) -> str | None:
    """Why `path` cannot be a workspace path, or None when it can."""
    if not path or len(path) > MAX_PATH:
        return f"Use a path of 1 to {MAX_PATH} characters."
    # A line break or an escape in a name splits log lines and Content-Disposition headers, and shows
    # one file as another in a listing.
    if "\\" in path or any(unicodedata.category(character) == "Cc" for character in path):
        return "A path may not contain backslashes or control characters (NUL, tabs, line breaks, escapes)."
    if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        return "Use a relative path without empty, `.` or `..` parts, e.g. `docs/report.md`."
    try:
        path.encode()
    except UnicodeEncodeError:
        return "A path must be valid UTF-8."
    return None


# --- walking without following ------------------------------------------------------------------


def _entries(directory_fd: int, prefix: str = "") -> Iterator[tuple[str, int, str, os.stat_result]]:
    """(path, its directory's fd, name, lstat) of everything below a directory, depth first.

    A descriptor is valid only until the next item is asked for.
    """
    with os.scandir(directory_fd) as scan:
        entries = list(scan)
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        path = prefix + entry.name
        if stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(entry.name, DIRECTORY_FLAGS, dir_fd=directory_fd)
            except OSError:
                continue  # replaced by something else meanwhile: not followed
            try:
                yield path, directory_fd, entry.name, info
                yield from _entries(child, path + "/")
            finally:
                os.close(child)
        else:
            yield path, directory_fd, entry.name, info


@contextlib.contextmanager
def _open_directory(path: Path) -> Iterator[int]:
    fd = os.open(path, DIRECTORY_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


# --- out: the workspace into storage --------------------------------------------------------------


def scan(workspace: Path, manifest: Manifest, limits: Limits, staging: Path) -> Scan:
    """The changes since `manifest`, each changed content copied to `staging` (the agent cannot touch it).

    Updates `manifest` to what it found; nothing is uploaded or recorded here.
    """
    result = Scan()
    found: dict[str, Seen] = {}
    total = 0
    with _open_directory(workspace) as root:
        for path, directory, name, info in _entries(root):
            if stat.S_ISDIR(info.st_mode):
                continue
            reason = _refusal(path, info, limits)
            if reason is None and (len(found) >= limits.files or total + info.st_size > limits.total_bytes):
                reason = (
                    f"The workspace is over its limits ({limits.files:,} files, {limits.total_bytes:,} bytes); "
                    "this file and what follows it were not saved."
                )
            if reason is not None:
                result.skipped[path] = reason
                continue
            before = manifest.entries.get(path)
            if before is not None and (before.size, before.mtime_ns) == (info.st_size, info.st_mtime_ns):
                found[path] = before
                total += info.st_size
                continue
            copied = _copy(directory, name, info, limits, staging)
            if copied is None:
                result.skipped[path] = "It changed or vanished while it was read; the next sync takes it."
                continue
            sha256, size, staged = copied
            found[path] = Seen(size, info.st_mtime_ns, sha256)
            total += size
            if before is not None and before.sha256 == sha256:
                os.unlink(staged)  # touched, not changed
                continue
            change = "created" if before is None else "modified"
            result.changes.append(Change(path, change, size, sha256, staged))
    for path in manifest.entries:
        if path not in found and path not in result.skipped:
            result.changes.append(Change(path, "deleted"))
    # A skipped path keeps what was synced before (a file over the limit is not a deletion).
    manifest.entries = {**{p: s for p, s in manifest.entries.items() if p in result.skipped}, **found}
    return result


def _refusal(path: str, info: os.stat_result, limits: Limits) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "A symbolic link is not saved (its target could be anything on the machine)."
    if not stat.S_ISREG(info.st_mode):
        return "Only regular files are saved (not FIFOs, sockets or devices)."
    if info.st_nlink > 1:
        return "A file with more than one hard link is not saved."
    if info.st_size > limits.file_bytes:
        return f"The file is {info.st_size:,} bytes; the limit is {limits.file_bytes:,}."
    return valid_path(path)


def _copy(
    directory: int, name: str, info: os.stat_result, limits: Limits, staging: Path
) -> tuple[str, int, str] | None:
    """Copy a regular file through one checked descriptor; (sha256, size, staged copy), or None if it moved."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=directory)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as source:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_ino != info.st_ino or opened.st_nlink > 1:
            return None
        digest = hashlib.sha256()
        size = 0
        with tempfile.NamedTemporaryFile(dir=staging, delete=False) as target:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limits.file_bytes:  # it grew while it was read
                    target.close()
                    os.unlink(target.name)
                    return None
                digest.update(chunk)
                target.write(chunk)
    return digest.hexdigest(), size, target.name


# --- in: storage into the workspace ---------------------------------------------------------------


def place_tree(
    workspace: Path,
    tree: dict[str, str],
    manifest: Manifest,
    open_content: ContentOpener,
    owner: tuple[int, int] | None,
    transfers: int = 1,
) -> None:
    """Make `workspace` hold exactly `tree` (path → sha256): fetch what differs, remove what is not in it."""
    kept: dict[str, Seen] = {}
    with _open_directory(workspace) as root:
        local = {path: info for path, _, _, info in _entries(root)}
        # Deepest first, so a directory is empty by the time it is considered.
        for path, info in sorted(local.items(), key=lambda item: item[0].count("/"), reverse=True):
            wanted, seen = tree.get(path), manifest.entries.get(path)
            if stat.S_ISDIR(info.st_mode):
                if not any(other.startswith(path + "/") for other in tree):
                    _remove(root, path, directory=True)
            elif (
                wanted is not None
                and stat.S_ISREG(info.st_mode)
                and info.st_nlink == 1
                and seen is not None
                and (seen.size, seen.mtime_ns, seen.sha256) == (info.st_size, info.st_mtime_ns, wanted)
            ):
                kept[path] = seen
            else:
                _remove(root, path, directory=False)
        missing = sorted(path for path in tree if path not in kept)
        # Directories first, one at a time; then the contents, `transfers` at a time.
        for parent in sorted({path.rpartition("/")[0] for path in missing} - {""}):
            with _directory_at(root, parent, create=True, owner=owner):
                pass
        with ThreadPoolExecutor(max_workers=max(1, transfers)) as pool:
            written = pool.map(lambda path: _write(root, path, tree[path], open_content, owner), missing)
            kept.update(zip(missing, written, strict=True))
    manifest.entries = kept


def _remove(root: int, path: str, *, directory: bool) -> None:
    parent, _, name = path.rpartition("/")
    try:
        with _directory_at(root, parent, create=False, owner=None) as fd:
            if directory:
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=fd)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
    except OSError:
        pass  # its directory went away with it


@contextlib.contextmanager
def _directory_at(root: int, path: str, *, create: bool, owner: tuple[int, int] | None) -> Iterator[int]:
    """A descriptor of `path` below `root`, opened part by part without following links; with `create`,
    whatever is not a directory on the way (a file, a link the agent left) is replaced by one."""
    fd = os.dup(root)
    try:
        for part in [p for p in path.split("/") if p]:
            try:
                child = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
            except OSError:
                if not create:
                    raise
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part, dir_fd=fd)
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
                if owner is not None:
                    os.fchown(child, *owner)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _write(root: int, path: str, sha256: str, open_content: ContentOpener, owner: tuple[int, int] | None) -> Seen:
    parent, _, name = path.rpartition("/")
    with _directory_at(root, parent, create=True, owner=owner) as directory:
        staging = f".{name}.{os.getpid()}.sync"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=directory)
        with os.fdopen(fd, "wb") as target, open_content(sha256) as source:
            while chunk := source.read(CHUNK):
                target.write(chunk)
            target.flush()
            if owner is not None:
                os.fchown(fd, *owner)
            info = os.fstat(fd)
        os.replace(staging, name, src_dir_fd=directory, dst_dir_fd=directory)
    return Seen(info.st_size, info.st_mtime_ns, sha256)
