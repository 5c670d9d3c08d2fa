"""Where workspace contents live in the object store (`tenants.storage`).

Contents are stored once per conversation under their SHA-256, so versions that did not change
share a blob, and a conversation's files are deleted by its prefix:
`tenants/<tenant>/conversations/<conversation>/blobs/<sha256>`.
"""

from typing import IO

from conversations.models import Conversation
from tenants.storage import delete_tree, open_object, put_object, tenant_prefix


def conversation_prefix(tenant_id: str, conversation_id: object) -> str:
    return f"{tenant_prefix(tenant_id)}conversations/{conversation_id}/"


def blob_key(conversation: Conversation, sha256: str) -> str:
    return f"{conversation_prefix(conversation.tenant_id, conversation.pk)}blobs/{sha256}"


def put_blob(conversation: Conversation, sha256: str, content: IO[bytes], size: int = -1) -> None:
    """Store a content under its checksum (storing it again changes nothing)."""
    put_object(blob_key(conversation, sha256), content, size)


def open_blob(conversation: Conversation, sha256: str) -> IO[bytes]:
    """The content, streamed (on S3, straight from the GET's body)."""
    return open_object(blob_key(conversation, sha256))


def delete_conversation_files(tenant_id: str, conversation_id: object) -> None:
    """Remove one conversation's stored contents: both ids are needed, and a missing one is refused."""
    delete_tree(conversation_prefix(tenant_id, conversation_id))
