from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants.models import ApiKey, Tenant


class Command(BaseCommand):
    help = "Issue an API key for one tenant (--tenant) or with admin scope (--admin). Prints the key once."

    def add_arguments(self, parser: CommandParser) -> None:
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--tenant", help="The tenant the key belongs to.")
        scope.add_argument("--admin", action="store_true", help="A platform-wide admin key.")
        parser.add_argument("--name", default="", help="What the key is for.")
        parser.add_argument("--quiet", action="store_true", help="Print only the key.")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = None
        if options["tenant"]:
            tenant = Tenant.objects.filter(pk=options["tenant"]).first()
            if tenant is None:
                raise CommandError(
                    f"No tenant '{options['tenant']}'. Create it with: manage.py createtenant {options['tenant']}"
                )
        name = options["name"] or (f"{tenant.pk} key" if tenant else "admin key")
        key, raw_key = ApiKey.issue(name, tenant=tenant)
        if options["quiet"]:
            self.stdout.write(raw_key)
            return
        scope = f"tenant {tenant.pk}" if tenant else "admin (all tenants)"
        self.stdout.write(f"api key '{key.name}' for {scope} (shown once): {raw_key}")
