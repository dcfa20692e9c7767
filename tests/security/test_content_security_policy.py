"""Every page is served with a Content-Security-Policy that allows scripts from the app's origin only.

(The browser tests check that the pages keep working under it, with no violation reported.)
"""

from __future__ import annotations

import pytest

from tests.security import test_every_view_role_matrix as role_matrix
from tests.security.conftest import client_for

# The role matrix lists every view; its fixture fills in the ids of a world with one of everything.
ids = role_matrix.ids
PAGES = [path for method, path, _ in role_matrix.MATRIX if method == "get"] + ["/admin/", "/admin/core/prompt/", "/api/docs/?script="]


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


@pytest.mark.parametrize("path", PAGES)
def test_every_page_allows_scripts_from_its_own_origin_only(users, ids, path):
    response = client_for(users["admin"]).get(path.format(**ids))
    assert response.status_code < 500
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert "script-src" not in policy
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]


def test_the_login_page_of_an_anonymous_visitor_has_the_policy_too(client, db):
    assert directives(client.get("/accounts/login/"))["default-src"] == ["'self'"]
