"""A deleted conversation or tenant takes its stored files along, once the deletion is committed."""

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from conversations.models import Conversation
from tenants.models import Tenant
from workspaces.services import delete_stored_files


@receiver(post_delete, sender=Conversation)
def conversation_deleted(sender: Any, instance: Conversation, **kwargs: Any) -> None:
    transaction.on_commit(lambda: delete_stored_files(instance.tenant_id, instance.pk))


@receiver(post_delete, sender=Tenant)
def tenant_deleted(sender: Any, instance: Tenant, **kwargs: Any) -> None:
    transaction.on_commit(lambda: delete_stored_files(instance.pk))
