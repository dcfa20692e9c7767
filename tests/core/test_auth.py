"""`SessionUserBackend`: the signed-in user arrives knowing whether they may annotate, and a role
taken away is taken away on the next request."""

from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from preference_app.annotation.selectors import user_can_annotate
from preference_app.core import roles
from preference_app.core.auth import SessionUserBackend
from tests.conftest import make_user


def test_the_loaded_user_knows_their_annotating_role_without_another_query(annotator, researcher, admin_user):
    backend = SessionUserBackend()
    loaded = {user.username: backend.get_user(user.pk) for user in (annotator, researcher, admin_user)}
    with CaptureQueriesContext(connection) as captured:
        allowed = {name: user_can_annotate(user) for name, user in loaded.items()}
    assert allowed == {annotator.username: True, researcher.username: False, admin_user.username: True}
    assert len(captured) == 0


def test_an_inactive_or_unknown_user_is_not_loaded(db):
    inactive = make_user("gone", roles.ANNOTATOR, is_active=False)
    backend = SessionUserBackend()
    assert backend.get_user(inactive.pk) is None
    assert backend.get_user(inactive.pk + 1000) is None


def test_a_revoked_annotator_is_refused_on_their_next_request(client, annotator):
    client.force_login(annotator)
    page = reverse("annotation:compare")
    assert client.get(page).status_code == 200
    annotator.groups.remove(Group.objects.get(name=roles.ANNOTATOR))
    assert client.get(page).status_code == 403
