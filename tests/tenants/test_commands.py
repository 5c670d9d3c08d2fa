"""The management commands a newcomer meets first."""

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from tenants.models import ApiKey

pytestmark = pytest.mark.django_db


def bootstrap(key_file: Path) -> str:
    out = io.StringIO()
    call_command("bootstrapdemo", key_file=key_file, stdout=out)
    return next(line.split()[2] for line in out.getvalue().splitlines() if line.startswith("API key:"))


def test_bootstrapdemo_prints_the_same_key_every_time(tmp_path: Path) -> None:
    key_file = tmp_path / "var" / "demo-key"

    first, second = bootstrap(key_file), bootstrap(key_file)

    assert first == second == key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert ApiKey.objects.filter(tenant="demo").count() == 1


def test_bootstrapdemo_mints_a_new_key_when_the_kept_one_was_revoked_or_lost(tmp_path: Path) -> None:
    key_file = tmp_path / "demo-key"
    first = bootstrap(key_file)
    ApiKey.objects.get(tenant="demo").revoke()

    second = bootstrap(key_file)
    key_file.unlink()
    third = bootstrap(key_file)

    assert len({first, second, third}) == 3
    assert ApiKey.objects.live().filter(tenant="demo").count() == 2
