"""Syncing a workspace the agent controls: only regular files are read, never through a link, and never
past the limits; what comes back from storage replaces whatever the agent left in its way."""

import hashlib
import io
import os
from pathlib import Path

import pytest

from workspaces.sync import Limits, Manifest, place_tree, scan, valid_path

LIMITS = Limits(file_bytes=1024 * 1024, total_bytes=10 * 1024 * 1024, files=100)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    return Manifest(tmp_path / "manifest.json")


def test_new_changed_touched_and_deleted_files(workspace: Path, staging: Path, manifest: Manifest) -> None:
    (workspace / "docs").mkdir()
    (workspace / "docs" / "a.md").write_bytes(b"alpha")
    (workspace / "b.txt").write_bytes(b"beta")

    first = scan(workspace, manifest, LIMITS, staging)
    again = scan(workspace, manifest, LIMITS, staging)
    (workspace / "docs" / "a.md").write_bytes(b"alpha two")
    os.utime(workspace / "b.txt", ns=(1, 1))  # touched, same content
    (workspace / "c.txt").write_bytes(b"gamma")
    os.unlink(workspace / "b.txt")
    third = scan(workspace, manifest, LIMITS, staging)

    assert sorted((c.path, c.change, c.sha256) for c in first.changes) == [
        ("b.txt", "created", sha(b"beta")),
        ("docs/a.md", "created", sha(b"alpha")),
    ]
    assert again.changes == [] and again.skipped == {}
    assert sorted((c.path, c.change) for c in third.changes) == [
        ("b.txt", "deleted"),
        ("c.txt", "created"),
        ("docs/a.md", "modified"),
    ]
    staged = next(c for c in third.changes if c.path == "docs/a.md").staged
    assert Path(staged).read_bytes() == b"alpha two" and Path(staged).parent == staging


def test_links_fifos_and_oversize_files_are_never_read(workspace: Path, staging: Path, manifest: Manifest) -> None:
    (workspace / "shadow").symlink_to("/etc/shadow")
    (workspace / "environ").symlink_to("/proc/1/environ")
    (workspace / "escape").symlink_to("/etc", target_is_directory=True)
    (workspace / "mine.txt").write_bytes(b"mine")
    os.link(workspace / "mine.txt", workspace / "hard-link")
    os.mkfifo(workspace / "pipe")
    with open(workspace / "sparse", "wb") as sparse:
        sparse.truncate(2 * 1024**3)  # 2 GB, almost none of it on disk

    result = scan(workspace, manifest, LIMITS, staging)

    assert result.changes == []
    assert set(result.skipped) == {"shadow", "environ", "escape", "mine.txt", "hard-link", "pipe", "sparse"}
    assert "symbolic link" in result.skipped["shadow"] and "hard link" in result.skipped["hard-link"]
    assert "regular files" in result.skipped["pipe"] and "2,147,483,648 bytes" in result.skipped["sparse"]
    assert list(staging.iterdir()) == []


def test_a_workspace_over_its_file_count_saves_what_fits_and_says_why(
    workspace: Path, staging: Path, manifest: Manifest
) -> None:
    for n in range(5):
        (workspace / f"{n}.txt").write_text(str(n))

    result = scan(workspace, manifest, Limits(file_bytes=100, total_bytes=1000, files=3), staging)

    assert len(result.changes) == 3 and len(result.skipped) == 2
    assert all("over its limits" in why for why in result.skipped.values())


def test_a_file_skipped_later_is_not_a_deletion(workspace: Path, staging: Path, manifest: Manifest) -> None:
    (workspace / "grows.log").write_bytes(b"small")
    scan(workspace, manifest, LIMITS, staging)
    (workspace / "grows.log").write_bytes(b"x" * (LIMITS.file_bytes + 1))

    result = scan(workspace, manifest, LIMITS, staging)

    assert result.changes == [] and "grows.log" in result.skipped


def test_placing_a_tree_fetches_what_differs_and_removes_what_is_not_in_it(workspace: Path, manifest: Manifest) -> None:
    contents = {sha(b"one"): b"one", sha(b"two"): b"two"}
    fetched: list[str] = []

    def open_content(digest: str) -> io.BytesIO:
        fetched.append(digest)
        return io.BytesIO(contents[digest])

    (workspace / "stale.txt").write_text("left by a killed run")
    (workspace / "dir").symlink_to("/etc", target_is_directory=True)  # in the way of dir/two.txt
    place_tree(workspace, {"one.txt": sha(b"one"), "dir/two.txt": sha(b"two")}, manifest, open_content, None)
    fetched_first = list(fetched)
    place_tree(workspace, {"one.txt": sha(b"one"), "dir/two.txt": sha(b"two")}, manifest, open_content, None)

    assert sorted(str(p.relative_to(workspace)) for p in workspace.rglob("*")) == ["dir", "dir/two.txt", "one.txt"]
    assert not (workspace / "dir").is_symlink() and (workspace / "dir" / "two.txt").read_bytes() == b"two"
    assert sorted(fetched_first) == sorted(contents) and len(fetched) == 2  # the second time, nothing to fetch
    assert Path("/etc/two.txt").exists() is False


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("a.txt", True),
        ("docs/report.md", True),
        ("../x", False),
        ("/etc/passwd", False),
        ("a//b", False),
        ("a\x00b", False),
        ("", False),
        ("a/./b", False),
    ],
)
def test_paths_are_relative_and_plain(path: str, ok: bool) -> None:
    assert (valid_path(path) is None) is ok
