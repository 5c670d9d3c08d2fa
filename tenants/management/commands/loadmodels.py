from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from tenants.catalog import DEFAULT_FILE, PROVIDER_KEYS, CatalogFileError, load_entry, read_catalog_file
from tenants.models import LanguageModel


class Command(BaseCommand):
    help = (
        "Fill the model catalog with the Claude models on the Anthropic API and on Bedrock, at their published "
        "prices, from a data file in the repository (tenants/data/claude_models.toml). Idempotent; a changed price "
        "applies from now on; never deletes a model or touches the offline model."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="The data file (default: %(default)s).")
        parser.add_argument(
            "--provider",
            action="append",
            choices=sorted(PROVIDER_KEYS.values()),
            help="Load only this provider's models (repeatable; default: both).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Print what would change, and change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            catalog = read_catalog_file(options["file"])
        except CatalogFileError as exc:
            raise CommandError(str(exc)) from None
        providers = set(options["provider"] or PROVIDER_KEYS.values())
        entries = [entry for entry in catalog.entries if entry.provider in providers]
        dry_run = options["dry_run"]
        self.stdout.write(
            f"{'Dry run, nothing is saved. ' if dry_run else ''}Claude models as of {catalog.as_of} ({catalog.source}); "
            "prices in USD per million tokens: input / output / 5-minute cache write / 1-hour cache write / cache read."
        )
        counts = dict.fromkeys(("created", "updated", "unchanged", "skipped"), 0)
        with transaction.atomic():
            for entry in entries:
                try:
                    outcome = load_entry(entry)
                except CatalogFileError as exc:
                    raise CommandError(str(exc)) from None
                counts[outcome.action] += 1
                details = f": {'; '.join(outcome.details)}" if outcome.details else ""
                self.stdout.write(f"  {outcome.action:<9} {outcome.model_id}{details}")
            left = list(
                LanguageModel.objects.filter(provider__in=providers)
                .exclude(pk__in=[entry.id for entry in entries])
                .values_list("pk", flat=True)
            )
            for model_id in left:
                self.stdout.write(f"  {'left':<9} {model_id}: not in the file, left as it is")
            if dry_run:
                transaction.set_rollback(True)
        summary = ", ".join(f"{count} {action}" for action, count in counts.items())
        self.stdout.write(
            f"{'Would have: ' if dry_run else ''}{summary}; {len(left)} not in the file left as they are."
        )
