"""Every form and state-changing endpoint refuses a POST without a valid CSRF token."""

from __future__ import annotations

import uuid

import pytest

from preference_app.core.models import Judgment, TrainingRound
from tests.security.conftest import client_for
from tests.security.test_every_view_role_matrix import MATRIX

# Any 32-character secret is a valid CSRF cookie; the same value in the header matches it.
SECRET = "csrftestsecret0123456789abcdefgh"
# DRF's token endpoint is exempt by design: it takes credentials in the body and no session cookie,
# which is what a cross-site request would ride on.
EXEMPT = {"/api/auth/token/"}
POSTS = [(path, expected) for method, path, expected in MATRIX if method == "post" and path not in EXEMPT]
SIGNED_IN = {"annotator": 1, "researcher": 2, "admin": 3}


def role_allowed(expected) -> str:
    """A signed-in role the matrix does not refuse, so a 403 below can only come from the CSRF check.

    A role that would reach the view is preferred; failing that, one the view answers 404 (the object
    named in the path does not exist), since DRF checks the CSRF token before it looks the object up.
    """
    allowed = [role for role, index in SIGNED_IN.items() if expected[index] != 403]
    return next((role for role in allowed if expected[SIGNED_IN[role]] != 404), allowed[0])


@pytest.mark.parametrize("path, expected", POSTS, ids=[path for path, _ in POSTS])
def test_a_post_without_a_csrf_token_is_refused_and_changes_nothing(users, world, path, expected):
    ids = {"comparison": world["comparison_id"], "chat": world["conversation_id"], "round": world["round_id"],
           "version": world["version_id"], "job": uuid.uuid4()}
    role = role_allowed(expected)
    client = client_for(users[role], enforce_csrf_checks=True)
    before = (Judgment.objects.count(), list(TrainingRound.objects.values_list("status", flat=True)))

    refused = client.post(path.format(**ids), {"preference": "3", "text": "Hello", "rating": "3"})
    assert refused.status_code == 403
    assert (Judgment.objects.count(), list(TrainingRound.objects.values_list("status", flat=True))) == before

    client.cookies["csrftoken"] = SECRET
    accepted = client.post(path.format(**ids), {"preference": "3", "text": "Hello", "rating": "3"},
                           HTTP_X_CSRFTOKEN=SECRET)
    assert accepted.status_code != 403


def test_the_login_form_needs_a_csrf_token_too(annotator):
    client = client_for(None, enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "ann", "password": "correct horse battery"})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session
