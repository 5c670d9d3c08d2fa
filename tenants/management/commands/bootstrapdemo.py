from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tenants.models import ApiKey, Tenant
from tenants.services import create_tenant_with_key, ensure_offline_model


class Command(BaseCommand):
    help = "Create the offline model, a `demo` tenant and a fresh key for it (idempotent), and print how to talk to it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_offline_model()
        tenant = Tenant.objects.filter(pk="demo").first()
        if tenant is None:
            tenant, raw_key = create_tenant_with_key(
                "demo", "Demo tenant", system_prompt="You are a helpful assistant for the demo tenant."
            )
        else:
            _, raw_key = ApiKey.issue("demo key", tenant=tenant)
        base = options["base_url"]
        self.stdout.write(
            f"""
Demo tenant '{tenant.pk}' on model '{tenant.default_model_id}' ({tenant.default_model}).
API key (shown once): {raw_key}

  export KEY={raw_key}
  curl -s -X POST {base}/api/tenants/demo/conversations -H "X-API-Key: $KEY" -H 'Content-Type: application/json' -d '{{}}'
  curl -s -X POST {base}/api/tenants/demo/conversations/<id>/stream -H "X-API-Key: $KEY" -H 'Content-Type: application/json' -d '{{"text": "Hello [[bash echo hi]]"}}'

API docs: {base}/api/docs/   Admin: {base}/admin/ (manage.py createsuperuser)
"""
        )
