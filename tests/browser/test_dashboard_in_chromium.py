"""An admin starts a training round from the dashboard and watches its progress change live."""

import pytest
from playwright.sync_api import expect

from preference_app.core.models import TrainingRound
from preference_app.core.services import builtin_prompts_load
from tests.browser.conftest import log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_an_admin_starts_a_round_and_sees_its_progress_change(page, admin_user, tiny_policy, celery_worker):
    builtin_prompts_load()
    log_in(page, admin_user.username)
    page.goto("/rounds/")
    expect(page.locator("#round-progress")).to_contain_text("No round is running")
    page.get_by_label("prompts per round").fill("3")
    page.get_by_label("max new tokens", exact=True).fill("4")
    page.get_by_role("button", name="Start round").click()
    expect(page.get_by_text("Round 1 started.")).to_be_visible()
    status = page.locator("#round-progress .status")
    first_seen = status.get_attribute("data-status")
    assert first_seen in {"pending", "generating", "collecting"}
    # A marker on window survives only if the panel is swapped by htmx rather than the page reloaded.
    page.evaluate("window.__stillTheSamePage = true")
    # Generous: on a loaded two-core machine the worker can take a minute or more to start and sample.
    expect(status).to_have_attribute("data-status", "collecting", timeout=180_000)
    expect(page.locator("#round-progress")).to_contain_text("Judgments: 0 of")
    assert page.evaluate("window.__stillTheSamePage") is True
    assert TrainingRound.objects.get().status == "collecting"
    screenshot(page, "dashboard.png")
