"""Failed sign-ins are limited per address and user name, on the login page and the token endpoint;
passwords must pass Django's validators."""

from __future__ import annotations

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def fresh_counts(settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    cache.clear()
    yield
    cache.clear()


def sign_in(client, username, password, address="10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_after_the_limit_even_the_right_password_is_refused_with_a_clear_message(annotator):
    client = Client()
    for _ in range(3):
        assert sign_in(client, "ann", "wrong").status_code == 200
    refused = sign_in(client, "ann", PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed sign-ins for this account from your address" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_lockout_touches_neither_other_addresses_nor_other_accounts(annotator, researcher):
    client = Client()
    for _ in range(3):
        sign_in(client, "ann", "wrong")
    assert sign_in(Client(), "ann", PASSWORD, address="10.0.0.2").status_code == 302
    assert sign_in(Client(), "res", PASSWORD).status_code == 302


def test_a_successful_sign_in_clears_the_count(annotator):
    client = Client()
    for _ in range(2):
        sign_in(client, "ann", "wrong")
    assert sign_in(client, "ann", PASSWORD).status_code == 302
    for _ in range(2):
        sign_in(Client(), "ann", "wrong")
    assert sign_in(Client(), "ann", PASSWORD).status_code == 302


def test_the_admin_signs_in_through_the_limited_login_page(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/admin/"


def test_the_token_endpoint_counts_failures_too(researcher):
    client = APIClient(REMOTE_ADDR="10.0.0.1")
    for _ in range(3):
        assert client.post("/api/auth/token/", {"username": "res", "password": "wrong"}).status_code == 400
    refused = client.post("/api/auth/token/", {"username": "res", "password": PASSWORD})
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.json()["detail"]


@pytest.mark.parametrize("password", ["short1", "password123", "12345678901", "ann"])
def test_weak_passwords_are_rejected(annotator, password):
    with pytest.raises(ValidationError):
        validate_password(password, user=annotator)
