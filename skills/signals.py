"""A deleted skill takes its stored files along, once the deletion is committed."""

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from skills.models import Skill
from workspaces.storage import delete_prefix


@receiver(post_delete, sender=Skill)
def skill_deleted(sender: Any, instance: Skill, **kwargs: Any) -> None:
    transaction.on_commit(lambda: delete_prefix(instance.storage_prefix))
