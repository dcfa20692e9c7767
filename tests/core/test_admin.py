"""The Django admin's pages for the preference data read as the people who made it saw it."""

import pytest
from django.urls import reverse

from preference_app.core.models import Judgment
from tests.conftest import make_user


@pytest.fixture
def superuser(db):
    return make_user("root", None, is_staff=True, is_superuser=True)


def test_a_judgment_is_listed_with_the_side_the_annotator_pressed(client, superuser, comparison, annotator):
    # The second candidate was shown on the left and the annotator pressed "left is better", so the
    # stored choice is the second candidate.
    Judgment.objects.create(comparison=comparison, annotator=annotator, choice="b", strength=2, left_candidate="b")
    client.force_login(superuser)
    page = client.get(reverse("admin:core_judgment_changelist")).content.decode()
    assert "The left reply is better" in page
    assert "Second candidate (B) is better" in page
    assert "As the annotator saw it" in page and "Shown on the left" in page


def test_the_admin_index_names_generation_batches_in_plain_english(client, superuser):
    client.force_login(superuser)
    page = client.get(reverse("admin:index")).content.decode()
    assert "Generation batches" in page and "Generation batchs" not in page


@pytest.mark.parametrize("url_name", ["home", "admin:index"])
def test_every_page_links_an_icon_that_is_served(client, superuser, url_name):
    client.force_login(superuser)
    page = client.get(reverse(url_name)).content.decode()
    assert '<link rel="icon" href="/static/favicon.svg"' in page
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"


def test_the_conventional_favicon_path_leads_to_the_icon(client):
    response = client.get("/favicon.ico", follow=True)
    assert response.redirect_chain == [("/static/favicon.svg", 301)]
    assert response.status_code == 200
