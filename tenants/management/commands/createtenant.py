from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from agents.services import default_profile, update_profile
from tenants.models import LanguageModel, Tenant, slug_validator
from tenants.services import create_tenant_with_key


class Command(BaseCommand):
    help = "Create a tenant and its first API key (printed once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", help="Slug id, e.g. acme.")
        parser.add_argument("--name", help="Display name (defaults to the id).")
        parser.add_argument("--system-prompt", default="", help="The default agent's instructions.")
        parser.add_argument(
            "--model", default="", help="Default model id from the catalog (default: the offline model)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant_id = options["id"]
        try:
            slug_validator(tenant_id)
        except ValidationError as exc:
            raise CommandError(f"Invalid tenant id '{tenant_id}': {exc.messages[0]}") from None
        if Tenant.objects.filter(pk=tenant_id).exists():
            raise CommandError(f"Tenant '{tenant_id}' already exists.")
        model_id = options["model"]
        if model_id and not LanguageModel.objects.usable().filter(pk=model_id).exists() and model_id != "offline":
            raise CommandError(f"No active model '{model_id}' in the catalog.")
        with transaction.atomic():
            tenant, raw_key = create_tenant_with_key(tenant_id, options["name"] or tenant_id, model_id=model_id)
            if options["system_prompt"]:
                update_profile(
                    default_profile(tenant), {"instructions": options["system_prompt"]}, created_by="createtenant"
                )
        self.stdout.write(f"tenant: {tenant.pk} ({tenant.name}), default model {tenant.default_model_id}")
        self.stdout.write(f"api key (shown once): {raw_key}")
