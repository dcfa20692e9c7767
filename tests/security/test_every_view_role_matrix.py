"""Every view and endpoint against every role: anonymous, annotator, researcher, admin.

The URLconf is walked at test time, and a view missing from the matrix fails the suite, so a new
page cannot ship without someone deciding who may open it.
"""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse

from preference_app.core.models import Judgment, Prompt
from tests.security.conftest import ROLES, client_for

# (method, path, expected status for anonymous, annotator, researcher, admin). Anonymous visitors
# are sent to the login page (302) by pages and refused (403) by the API; signed-in users without
# the role get 403, and someone else's chat or export job is a 404 so ids reveal nothing.
MATRIX = [
    ("get", "/", (302, 200, 200, 200)),
    ("get", "/health/", (200, 200, 200, 200)),
    ("get", "/accounts/login/", (200, 200, 200, 200)),
    ("post", "/accounts/logout/", (302, 302, 302, 302)),
    ("get", "/annotate/", (302, 200, 403, 200)),
    ("post", "/annotate/{comparison}/judge/", (302, 200, 403, 200)),
    ("post", "/annotate/{comparison}/skip/", (302, 302, 403, 302)),
    ("get", "/annotate/guidelines/", (200, 200, 200, 200)),
    ("get", "/annotate/chat/", (302, 200, 403, 200)),
    ("post", "/annotate/chat/", (302, 200, 403, 200)),
    ("get", "/annotate/chat/{chat}/", (302, 200, 403, 404)),
    ("get", "/annotate/chat/{chat}/drafts/", (302, 204, 403, 404)),
    ("post", "/annotate/chat/{chat}/message/", (302, 200, 403, 404)),
    ("post", "/annotate/chat/{chat}/judge/{comparison}/", (302, 200, 403, 404)),
    ("post", "/annotate/chat/{chat}/retry/", (302, 302, 403, 404)),
    ("post", "/annotate/chat/{chat}/end/", (302, 200, 403, 404)),
    ("get", "/rounds/", (302, 403, 200, 200)),
    ("get", "/rounds/progress/", (302, 403, 200, 200)),
    ("post", "/rounds/start/", (302, 403, 403, 302)),
    ("post", "/rounds/{round}/cancel/", (302, 403, 403, 302)),
    ("post", "/rounds/versions/{version}/promote/", (302, 403, 403, 302)),
    # The schema and its viewer describe the API to anyone; every endpoint they list checks roles.
    ("get", "/api/schema/", (200, 200, 200, 200)),
    ("get", "/api/docs/", (200, 200, 200, 200)),
    ("post", "/api/auth/token/", (400, 400, 400, 400)),
    ("get", "/api/prompts/", (403, 403, 200, 200)),
    ("post", "/api/prompts/", (403, 400, 403, 400)),
    ("get", "/api/prompts/{prompt}/", (403, 403, 200, 200)),
    ("get", "/api/comparisons/", (403, 403, 200, 200)),
    ("get", "/api/comparisons/{comparison}/", (403, 403, 200, 200)),
    ("get", "/api/judgments/", (403, 200, 200, 200)),
    ("post", "/api/assignments/next/", (403, 200, 403, 403)),
    ("post", "/api/judgments/", (403, 400, 403, 403)),
    ("get", "/api/judgments/{judgment}/", (403, 404, 200, 200)),
    ("get", "/api/rounds/", (403, 403, 200, 200)),
    ("get", "/api/rounds/{round}/", (403, 403, 200, 200)),
    ("get", "/api/model-versions/", (403, 403, 200, 200)),
    ("get", "/api/model-versions/{version}/", (403, 403, 200, 200)),
    ("get", "/api/export/", (403, 403, 200, 200)),
    ("get", "/api/export/card/", (403, 403, 200, 200)),
    ("get", "/api/export-jobs/", (403, 403, 200, 200)),
    ("post", "/api/export-jobs/", (403, 403, 202, 202)),
    ("get", "/api/export-jobs/{job}/", (403, 403, 200, 404)),
    # The job has not finished, so even its requester gets "not ready yet" instead of a file.
    ("get", "/api/export-jobs/{job}/data/", (403, 403, 400, 404)),
    ("get", "/api/export-jobs/{job}/card/", (403, 403, 400, 404)),
    ("get", "/api/import-jobs/", (403, 403, 200, 200)),
    # No file: refused by the input serializer.
    ("post", "/api/import-jobs/", (403, 403, 400, 400)),
    # An export job's id, which no import job has.
    ("get", "/api/import-jobs/{job}/", (403, 403, 404, 404)),
    ("post", "/api/import-jobs/{job}/resume/", (403, 403, 404, 404)),
]


def url_names(patterns=None, namespace: str = "") -> list[tuple[str, URLPattern]]:
    """Every named view in the URLconf as (namespaced name, pattern)."""
    found = []
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            found += url_names(pattern.url_patterns, inner)
        elif pattern.name:
            found.append((f"{namespace}{pattern.name}", pattern))
    return found


@pytest.fixture
def ids(world, users) -> dict[str, str]:
    prompt = Prompt.objects.create(text="Write a haiku.", text_sha256="0" * 64, source=Prompt.Source.BUILTIN)
    judgment = Judgment.objects.create(comparison_id=world["comparison_id"], annotator=users["researcher"], choice="a",
                                       strength=1, left_candidate="a")
    return {"comparison": world["comparison_id"], "chat": world["conversation_id"], "round": world["round_id"],
            "version": world["version_id"], "job": world["job"], "prompt": str(prompt.pk), "judgment": str(judgment.pk)}


def test_every_named_view_outside_the_admin_is_in_the_matrix():
    covered = {resolve(path.format(comparison=1, chat=1, round=1, version=1, prompt=1, judgment=1,
                                   job="00000000-0000-0000-0000-000000000000")).view_name for _, path, _ in MATRIX}
    views = {name for name, _ in url_names() if not name.startswith("admin:")}
    assert views - covered == set(), "Add these views to MATRIX with the status each role must get."


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method, path, expected", MATRIX, ids=[f"{m} {p}" for m, p, _ in MATRIX])
def test_each_role_gets_exactly_what_the_matrix_says(users, ids, role, method, path, expected):
    response = getattr(client_for(users[role]), method)(path.format(**ids))
    assert response.status_code == expected[ROLES.index(role)]
    if response.status_code == 302 and role == "anonymous":
        assert response["Location"].startswith("/accounts/login/")


def admin_path(name: str, pattern: URLPattern, admin_user) -> str:
    """A concrete URL for an admin view: the admin user's own row stands in for every object."""
    arguments = {"object_id": admin_user.pk, "id": admin_user.pk, "app_label": "core",
                 "content_type_id": ContentType.objects.get_for_model(admin_user).pk}
    wanted = set(pattern.pattern.regex.groupindex)
    return reverse(name, kwargs={key: arguments[key] for key in wanted})


@pytest.mark.parametrize("role", ROLES)
def test_only_staff_reach_any_admin_view(users, role):
    client = client_for(users[role])
    for name, pattern in url_names():
        if not name.startswith("admin:"):
            continue
        response = client.get(admin_path(name, pattern, users["admin"]))
        if role == "admin":
            assert response.status_code < 500, name
        else:
            # Sent away, never shown a page: to the admin's login URL, which itself sends everyone on
            # to the rate-limited login page (or, for the admin's logout, to the admin's index).
            assert response.status_code == 302, name
            assert name == "admin:logout" or "/login/" in response["Location"], name


@pytest.mark.parametrize("path", ["/", "/health/", "/rounds/", "/rounds/progress/", "/annotate/", "/annotate/guidelines/"])
def test_read_only_pages_refuse_posts(users, path):
    assert client_for(users["admin"]).post(path).status_code == 405
