"""An operator opens the usage dashboard in a real browser (Debian's headless Chromium) and sees its charts drawn."""

import os
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from tenants.models import Tenant
from tests.e2e.harness import Platform
from usage.budgets import periods
from usage.models import BudgetCounter, UsageRecord

# Also on the embedded SQLite, with Daphne serving it as `make run` does.
pytestmark = [pytest.mark.usefixtures("orm_beside_playwright"), pytest.mark.sqlite]

# Set to a path (e.g. /tmp/dashboard.png) to keep a copy of the screenshot outside the test's tmp dir.
SCREENSHOT_COPY = os.environ.get("DASHBOARD_SCREENSHOT", "")


@pytest.fixture
def operator_page(browser: Browser, platform: Platform, transactional_db: None) -> Iterator[Page]:
    User.objects.create_superuser("operator", "op@example.com", "a-long-test-password")
    context = browser.new_context(base_url=platform.base_url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    yield page
    context.close()
    assert errors == []


def drawn(page: Page, chart_id: str) -> dict[str, float]:
    """Each dataset's total as the Chart.js instance on the canvas holds it."""
    return page.evaluate(
        """(id) => {
            const chart = Chart.getChart(document.getElementById(`chart-${id}`));
            return Object.fromEntries(chart.data.datasets.map((d) => [d.label, d.data.reduce((a, b) => a + b, 0)]));
        }""",
        chart_id,
    )


def test_the_dashboard_draws_spend_and_runs_from_the_records(
    operator_page: Page, usage_history: list[UsageRecord], tmp_path: Path
) -> None:
    page = operator_page
    # acme has spent 90% of its month, by the gateway's counter of it.
    Tenant.objects.filter(pk="acme").update(monthly_budget_usd=Decimal("0.50"))
    month = periods(timezone.now(), "UTC")[1]
    BudgetCounter.objects.update_or_create(
        tenant_id="acme", level="tenant_month", subject="", period=month, defaults={"spent_usd": Decimal("0.45")}
    )

    page.click("text=Usage dashboard")  # from the admin's index
    page.wait_for_url("**/admin/usage/usagerecord/dashboard/")
    page.wait_for_function(
        "['spend-by-tenant', 'spend-by-model', 'runs'].every("
        "  (id) => window.Chart && Chart.getChart(document.getElementById(`chart-${id}`))?.data.datasets.length)"
    )

    recent = usage_history[:5]  # the sixth call is 40 days old
    by_tenant = drawn(page, "spend-by-tenant")
    assert by_tenant.keys() == {"acme", "globex"}
    assert by_tenant["globex"] == pytest.approx(float(sum(r.cost_usd for r in recent if r.tenant_id == "globex")))
    assert drawn(page, "spend-by-model").keys() == {"sonnet", "haiku"}
    assert drawn(page, "runs") == {"completed": 3, "failed": 3, "interrupted": 0}
    expect(page.locator("#top-users tbody tr").first).to_contain_text("carol")
    expect(page.locator("#failures")).to_contain_text("timeout")
    expect(page.locator("#budgets")).to_contain_text("90%")
    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=screenshot, full_page=True)
    if SCREENSHOT_COPY:
        shutil.copyfile(screenshot, SCREENSHOT_COPY)

    page.select_option("#tenant", "acme")
    page.click("#dashboard input[type=submit]")
    page.wait_for_url("**tenant=acme**")
    page.wait_for_function("Chart.getChart(document.getElementById('chart-spend-by-tenant'))")
    assert drawn(page, "spend-by-tenant").keys() == {"acme"}
