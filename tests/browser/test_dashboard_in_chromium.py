"""An admin starts a training round from the dashboard and watches its progress change live."""

import re

import pytest
from playwright.sync_api import expect

from preference_app.core.models import TrainingRound
from preference_app.core.prompts import builtin_prompts_load
from tests.browser.conftest import log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_an_admin_starts_a_round_and_sees_its_progress_change(page, admin_user, tiny_policy, celery_worker):
    builtin_prompts_load()
    log_in(page, admin_user.username)
    page.goto("/rounds/")
    expect(page.locator("#round-progress")).to_contain_text("No round is running")
    page.get_by_label("prompts per round").fill("3")
    page.get_by_label("Reply length in new tokens", exact=True).fill("4")
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


def test_an_admin_picks_a_preset_reads_the_grouped_form_and_sees_the_plan_follow_a_change(page, admin_user):
    log_in(page, admin_user.username)
    page.goto("/rounds/")
    expect(page.get_by_text("Charts appear after the first round.")).to_be_visible()
    page.get_by_role("link", name="quick demo").click()
    expect(page).to_have_url(re.compile(r"preset=quick_demo"))
    collection = page.get_by_role("group", name="Collection")
    expect(collection.get_by_label("Prompts per round")).to_have_value("8")
    expect(collection.get_by_text("Prompts that get fresh replies from the serving policy this round.")).to_be_visible()
    expect(page.get_by_label("Policy step")).to_have_value("dpo")
    # The advanced settings are folded away until asked for.
    seed = page.get_by_label("Random seed")
    expect(seed).to_be_hidden()
    page.get_by_text("Advanced settings").click()
    expect(seed).to_be_visible()
    plan = page.locator("#round-plan")
    expect(plan).to_contain_text("Generates 2 replies for each of 8 prompts")
    expect(plan).to_contain_text("minute")
    page.get_by_label("Prompts per round").fill("20")
    page.get_by_label("Prompts per round").blur()
    expect(plan).to_contain_text("Generates 2 replies for each of 20 prompts")
    page.get_by_label("Policy step").select_option("grpo")
    expect(plan).to_contain_text("GRPO for 16 iterations")
    screenshot(page, "dashboard-start-form.png")
