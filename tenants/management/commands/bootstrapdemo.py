import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from agents.services import default_profile, update_profile
from chat.links import ChatGrant, make_link_token
from tenants.models import ApiKey, Tenant, hash_key
from tenants.services import create_tenant_with_key, ensure_offline_model

DEMO_KEY_NAME = "demo key"


class Command(BaseCommand):
    help = (
        "Create the offline model and a `demo` tenant with one API key (idempotent: later calls print the "
        "same key), and print how to talk to it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--key-file",
            type=Path,
            default=settings.BASE_DIR / "var" / "demo-key",
            help="Where the demo key is kept between runs (readable by its owner only).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_offline_model()
        key_file: Path = options["key_file"]
        tenant = Tenant.objects.filter(pk="demo").first()
        if tenant is None:
            tenant, raw_key = create_tenant_with_key("demo", "Demo tenant")
            update_profile(
                default_profile(tenant),
                {"instructions": "You are a helpful assistant for the demo tenant."},
                created_by="bootstrapdemo",
            )
        else:
            raw_key = self._kept_key(key_file, tenant) or ApiKey.issue(DEMO_KEY_NAME, tenant=tenant)[1]
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(raw_key + "\n")
        os.chmod(key_file, 0o600)
        base = options["base_url"]
        # The chat page for the demo's end user, as a tenant's backend would hand it out (valid a week).
        chat_link = f"{base}/chat/open/{make_link_token(ChatGrant('demo', 'demo-user'), 7 * 24 * 3600)}"
        self.stdout.write(
            f"""
Demo tenant '{tenant.pk}' on model '{tenant.default_model_id}' ({tenant.default_model}).
API key: {raw_key}   (kept in {key_file}; the same on every `make run`)

  export KEY={raw_key}
  curl -s -X POST {base}/api/tenants/demo/conversations -H "X-API-Key: $KEY" -H 'Content-Type: application/json' -d '{{}}'
  curl -s -X POST {base}/api/tenants/demo/conversations/<id>/stream -H "X-API-Key: $KEY" -H 'Content-Type: application/json' -d '{{"text": "Hello [[bash echo hi]]"}}'

Chat (as the demo's end user): {chat_link}
API docs: {base}/api/docs/   Admin: {base}/admin/ (manage.py createsuperuser)
"""
        )

    @staticmethod
    def _kept_key(key_file: Path, tenant: Tenant) -> str:
        """The demo key of an earlier run, if it is still a live key of the demo tenant."""
        try:
            raw_key = key_file.read_text().strip()
        except OSError:
            return ""
        live = ApiKey.objects.live().filter(tenant=tenant, key_hash=hash_key(raw_key)).exists()
        return raw_key if raw_key and live else ""
