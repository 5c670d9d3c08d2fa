from typing import Any

from django.core.management.base import BaseCommand

from mcp_servers.vault import rotate


class Command(BaseCommand):
    help = "Re-encrypt every stored secret under the first of SECRETS_KEYS (then the older keys can go)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"Re-encrypted {rotate()} secrets under the newest key.")
