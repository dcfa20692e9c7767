"""Sign-in attempts are limited per client address and user name, on the login page, the admin's
sign-in and the token endpoint alike, also under parallel guessing and behind a proxy; passwords
must pass Django's validators."""

from __future__ import annotations

import threading

import pytest
import requests
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from tests.conftest import make_user

PASSWORD = "correct horse battery"
PARALLEL_GUESSES = 40


@pytest.fixture(autouse=True)
def limit_of_three(settings):
    settings.LOGIN_FAILURE_LIMIT = 3


def sign_in(client, username, password, address="10.0.0.1", **headers):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address,
                       **headers)


class CountingHasher(MD5PasswordHasher):
    """The tests' password hasher, counting how many passwords the server actually checked."""

    checks = 0
    lock = threading.Lock()

    def verify(self, password, encoded):
        with CountingHasher.lock:
            CountingHasher.checks += 1
        return super().verify(password, encoded)


def guess_wrong_password(url: str, endpoint: str, start: threading.Barrier) -> int:
    session = requests.Session()
    if endpoint == "page":
        session.get(f"{url}/accounts/login/")
        request = {"url": f"{url}/accounts/login/", "headers": {"Referer": url},
                   "data": {"username": "ann", "password": "wrong", "csrfmiddlewaretoken": session.cookies["csrftoken"]}}
    else:
        request = {"url": f"{url}/api/auth/token/", "json": {"username": "ann", "password": "wrong"}}
    start.wait()
    # The live server's listen queue is short: a connection it resets was never read, so it is sent
    # again (a repeat can only add attempts, never hide a check).
    while True:
        try:
            return session.post(**request, timeout=60).status_code
        except requests.ConnectionError:
            continue


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


@pytest.mark.parametrize("endpoint", ["page", "token"])
def test_parallel_wrong_passwords_check_no_more_passwords_than_the_limit(live_server, transactional_db, settings,
                                                                        endpoint):
    settings.LOGIN_FAILURE_LIMIT = 5
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    make_user("ann", None)
    CountingHasher.checks = 0
    start = threading.Barrier(PARALLEL_GUESSES)
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(guess_wrong_password(live_server.url, endpoint, start)))
        for _ in range(PARALLEL_GUESSES)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert CountingHasher.checks == 5
    assert statuses.count(429) == PARALLEL_GUESSES - 5


def test_behind_one_trusted_proxy_each_forwarded_client_is_limited_on_its_own(annotator, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.1"
    for _ in range(3):
        # The client forges an entry in front of the one the proxy appends; only the proxy's counts.
        assert sign_in(Client(), "ann", "wrong", proxy, HTTP_X_FORWARDED_FOR=f"1.1.1.{_}, 198.51.100.1").status_code == 200
    assert sign_in(Client(), "ann", PASSWORD, proxy, HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 429
    assert sign_in(Client(), "ann", PASSWORD, proxy, HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 302
    settings.TRUSTED_PROXY_COUNT = 0
    for _ in range(3):
        sign_in(Client(), "ann", "wrong", "10.0.0.7", HTTP_X_FORWARDED_FOR="198.51.100.3")
    # Without a trusted proxy the header is the client's own word and changes nothing.
    assert sign_in(Client(), "ann", PASSWORD, "10.0.0.7", HTTP_X_FORWARDED_FOR="198.51.100.4").status_code == 429


def test_failures_on_the_token_endpoint_lock_the_login_page_and_the_admin_sign_in(annotator):
    api = APIClient(REMOTE_ADDR="10.0.0.1")
    for _ in range(3):
        assert api.post("/api/auth/token/", {"username": "ann", "password": "wrong"}).status_code == 400
    assert sign_in(Client(), "ann", PASSWORD).status_code == 429
    # The Django admin's own sign-in form, were it reached past the redirect, checks through the same count.
    request = RequestFactory().post("/admin/login/", REMOTE_ADDR="10.0.0.1")
    assert not AdminAuthenticationForm(request, data={"username": "ann", "password": PASSWORD}).is_valid()
    assert request.login_limit_reached


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
