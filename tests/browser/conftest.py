"""A real headless Chromium, driven by Playwright, against pytest-django's live server.

Playwright cannot download browsers here, so Debian's Chromium (`make browser`) is launched by path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from preference_app.annotation import chat
from preference_app.core import roles
from preference_app.core.models import ModelVersion
from tests.conftest import TEST_OUTPUT

# Playwright's sync API runs an event loop in the test thread; the test still talks to the
# database synchronously between browser steps, which Django would otherwise refuse.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "correct horse battery"
SCREENSHOTS = TEST_OUTPUT / "browser"


@pytest.fixture(scope="session")
def chromium():
    if not CHROMIUM.exists():
        pytest.fail(f"No Chromium at {CHROMIUM}: install it with `make browser` (Debian packages chromium, chromium-driver).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server) -> Page:
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    expect.set_options(timeout=20_000)
    # Uncaught errors in the page's own scripts fail the test that caused them, and so does anything
    # the Content-Security-Policy refused.
    errors = csp_violations_recorded(context)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors or CSP violations in the page: {errors}"


def csp_violations_recorded(context: BrowserContext) -> list[str]:
    """A list that fills with "directive blocked-thing at file:line" for each CSP violation in the context.

    Chromium's own "Refused to ..." messages go to its log, which Playwright's console events do
    not carry; the page's securitypolicyviolation event does, and is passed to Python here.
    """
    violations: list[str] = []
    context.expose_function("__reportCspViolation", lambda violation: violations.append(violation))
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', event => window.__reportCspViolation("
        "`${event.effectiveDirective} ${event.blockedURI} at ${event.sourceFile}:${event.lineNumber}`));"
    )
    return violations


def log_in(page: Page, username: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(autouse=True)
def role_groups(transactional_db):
    """Recreate the role groups: a transactional test empties every table, including migrated data."""
    roles.roles_ensure(Group, Permission)


@pytest.fixture(autouse=True)
def short_chat_replies(monkeypatch):
    """Live-chat replies of a few tokens: the tiny model's text is noise, and each token costs time."""
    monkeypatch.setattr(chat, "CHAT_SAMPLING", {**chat.CHAT_SAMPLING, "max_new_tokens": 6})


@pytest.fixture
def tiny_policy(tiny_model_dir, transactional_db):
    return ModelVersion.objects.create(
        name="tiny", kind=ModelVersion.Kind.POLICY, path=str(tiny_model_dir), base_model_id="tiny-random", is_serving=True
    )
