"""GET requests never write: the dashboard and its 2 s progress poll only read, even when a round has
stalled (the sweeper fails it, rounds/sweeper.py)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from preference_app.core.models import TrainingRound
from preference_app.rounds.round_settings import RoundSettings

WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.mark.parametrize("page", ["/rounds/", "/rounds/progress/"])
def test_a_get_of_the_dashboard_issues_no_write_even_with_a_stalled_round(page, client, admin_user, settings):
    stale = timezone.now() - timedelta(seconds=settings.ROUND_STALL_SECONDS + 60)
    stalled = TrainingRound.objects.create(number=1, status="training_policy", config=RoundSettings().to_dict(),
                                           step="Training", step_claimed=stale)
    client.force_login(admin_user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(page)
    assert response.status_code == 200
    assert [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)] == []
    assert TrainingRound.objects.get(pk=stalled.pk).status == "training_policy"
