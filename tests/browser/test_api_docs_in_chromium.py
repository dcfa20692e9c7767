"""The API's Swagger UI works under the Content-Security-Policy (the page fixture fails on any violation)."""

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_swagger_ui_lists_the_endpoints_without_a_policy_violation(page, researcher):
    log_in(page, researcher.username)
    page.goto("/api/docs/")
    expect(page.locator(".opblock-summary-path", has_text="/api/export/").first).to_be_visible()
