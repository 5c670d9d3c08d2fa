"""Where workspace contents live: the default storage (a local folder, or S3 through django-storages).

Contents are stored once per conversation under their SHA-256, so versions that did not change
share a blob, and a conversation or a tenant is deleted by its prefix:
`tenants/<tenant>/conversations/<conversation>/blobs/<sha256>`.
"""

import shutil
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

from conversations.models import Conversation

SINGLE_REQUEST_BYTES = 8 * 1024 * 1024  # above this, uploads go in parts (django-storages, s3transfer)


def storage() -> Storage:
    return storages["default"]


def conversation_prefix(tenant_id: str, conversation_id: object) -> str:
    return f"tenants/{tenant_id}/conversations/{conversation_id}/"


def tenant_prefix(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/"


def blob_key(conversation: Conversation, sha256: str) -> str:
    return f"{conversation_prefix(conversation.tenant_id, conversation.pk)}blobs/{sha256}"


def _bucket(backend: Storage) -> Any:
    """The S3 bucket behind the storage when its keys are ours as they are (no `location` prefix), else None."""
    bucket = getattr(backend, "bucket", None)
    return bucket if bucket is not None and not getattr(backend, "location", "") else None


def put_blob(conversation: Conversation, sha256: str, content: IO[bytes], size: int = -1) -> None:
    """Store a content under its checksum (storing it again changes nothing)."""
    put_object(blob_key(conversation, sha256), content, size)


def open_blob(conversation: Conversation, sha256: str) -> IO[bytes]:
    """The content, streamed (on S3, straight from the GET's body)."""
    return open_object(blob_key(conversation, sha256))


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


def delete_prefix(prefix: str) -> None:
    """Remove every object under `prefix` (a conversation's, a tenant's, a skill's)."""
    backend = storage()
    if isinstance(backend, FileSystemStorage):
        shutil.rmtree(Path(backend.path(prefix)), ignore_errors=True)
        return
    bucket = getattr(backend, "bucket", None)
    if bucket is not None:  # S3: one listing and batched deletes, however many objects
        bucket.objects.filter(Prefix=prefix).delete()
        return
    directories, files = backend.listdir(prefix)
    for name in files:
        backend.delete(prefix + name)
    for name in directories:
        delete_prefix(f"{prefix}{name}/")
