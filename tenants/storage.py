"""The object store every app keeps files in: the default storage (a local folder, or S3 through django-storages).

Keys are laid out by owner, `tenants/<tenant>/…` and `platform/…`, so that what an owner stored can be
found and deleted by its prefix. The workspaces and the skills stand on this module; it lives with the
tenants because a tenant is the widest owner of anything stored.

Deletion is by name only: `delete_tree` removes one owner's folder and refuses a prefix that could
reach past it (no empty, `None`, `.` or `..` part, at least three parts), and the one deletion that is
meant to be wide, a whole tenant's files, is its own function, `delete_tenant_files`. An earlier
`delete_stored_files(tenant, conversation=None)` read a conversation id that Django had already set
to `None` and deleted every file of the tenant.
"""

import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

logger = logging.getLogger(__name__)

SINGLE_REQUEST_BYTES = 8 * 1024 * 1024  # above this, uploads go in parts (django-storages, s3transfer)

# One part of a key prefix: a tenant's slug, a UUID, a skill's name. Never empty, `.`, `..` or `None`.
_PART = re.compile(r"^(?!\.{1,2}$)(?!None$)[A-Za-z0-9._-]+$")


class WideDeletion(ValueError):
    """A deletion was asked for a prefix that does not name one owner's folder."""


def storage() -> Storage:
    return storages["default"]


def tenant_prefix(tenant_id: str) -> str:
    return f"tenants/{_part(tenant_id)}/"


def platform_prefix() -> str:
    return "platform/"


def _part(value: object) -> str:
    text = str(value)
    if not _PART.match(text):
        raise WideDeletion(f"{value!r} cannot name a folder in storage.")
    return text


def _bucket(backend: Storage) -> Any:
    """The S3 bucket behind the storage when its keys are ours as they are (no `location` prefix), else None."""
    bucket = getattr(backend, "bucket", None)
    return bucket if bucket is not None and not getattr(backend, "location", "") else None


def put_object(key: str, content: IO[bytes], size: int = -1) -> None:
    """Store `content` at a key named by its checksum, so that storing it again changes nothing."""
    backend = storage()
    bucket = _bucket(backend)
    if bucket is not None and 0 <= size <= SINGLE_REQUEST_BYTES:
        # One request: django-storages' save goes through s3transfer, which costs more than a small PUT.
        bucket.meta.client.put_object(Bucket=bucket.name, Key=key, Body=content.read())
        return
    # The key is final: a storage that renames on collision (FileSystemStorage) must not save again.
    if isinstance(backend, FileSystemStorage) and backend.exists(key):
        return
    saved = backend.save(key, File(content))
    if saved != key:  # a concurrent save of the same content won the name
        backend.delete(saved)


def open_object(key: str) -> IO[bytes]:
    """A stored object, streamed (on S3, straight from the GET's body)."""
    backend = storage()
    bucket = _bucket(backend)
    if bucket is not None:
        body: IO[bytes] = bucket.Object(key).get()["Body"]
        return body
    return backend.open(key, "rb")


def delete_object(key: str) -> None:
    storage().delete(key)


def delete_tree(prefix: str) -> None:
    """Remove every object under one owner's folder (`tenants/<t>/conversations/<c>/`, a skill's, …).

    Refused (`WideDeletion`) unless every part of `prefix` names something and there are at least three:
    a whole tenant goes only through `delete_tenant_files`.
    """
    parts = prefix.split("/")
    if not prefix.endswith("/") or len(parts) < 4 or not all(_PART.match(part) for part in parts[:-1]):
        raise WideDeletion(f"Refusing to delete {prefix!r}: it does not name one owner's folder.")
    _delete_under(prefix)


def delete_tenant_files(tenant_id: str) -> None:
    """Remove everything a tenant stored (its conversations' files, its skills): only for a deleted tenant."""
    _delete_under(tenant_prefix(tenant_id))


def delete_quietly(delete: Callable[..., None], *args: Any) -> None:
    """Run a deletion after its rows are gone; a failure is logged, since the rows cannot come back."""
    try:
        delete(*args)
    except Exception:
        # What is left in storage is found by its prefix; the log names it.
        logger.exception("Deleting stored files (%s%r) failed", delete.__name__, args)


def _delete_under(prefix: str) -> None:
    backend = storage()
    if isinstance(backend, FileSystemStorage):
        shutil.rmtree(Path(backend.path(prefix)), ignore_errors=True)
        return
    bucket = _bucket(backend)
    if bucket is not None:  # S3: one listing and batched deletes, however many objects
        bucket.objects.filter(Prefix=prefix).delete()
        return
    directories, files = backend.listdir(prefix)
    for name in files:
        backend.delete(prefix + name)
    for name in directories:
        _delete_under(f"{prefix}{name}/")
