"""The database connection of a web process dropped in the middle of a judgment's transaction.

The annotator must be told that nothing was saved, the resubmit must go through on a fresh
connection, and exactly one judgment must be stored.
"""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.db import connection, transaction

from preference_app.core import roles
from preference_app.core.middleware import DATABASE_UNAVAILABLE
from preference_app.core.models import Comparison, Judgment, ModelVersion
from tests.conftest import child_environment, make_user, wait_for
from tests.reliability.conftest import live_app
from tests.reliability.test_redis_restart import COMPARISON_ID, HTMX, SAVED, comparisons_to_judge

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True)]

WAITING_BACKEND = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
"""


def waiting_backends() -> list[int]:
    with connection.cursor() as cursor:
        # Statistics views are read from a snapshot kept for the whole transaction; this test polls
        # inside one, so the snapshot is dropped before each look.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(WAITING_BACKEND)
        return [pid for (pid,) in cursor.fetchall()]


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("Dropping one web request's connection needs PostgreSQL (pg_terminate_backend); "
                    "SQLite has no server connection to drop. Run with DATABASE_URL=postgresql://...")


def test_a_submit_whose_connection_is_terminated_says_nothing_was_saved_and_a_resubmit_stores_one_row():
    model_version = ModelVersion.objects.create(name="base:tiny", kind="policy", path="/unused", base_model_id="tiny")
    comparisons_to_judge(model_version, 1)
    annotator = make_user("ann", roles.ANNOTATOR)
    env = {**child_environment(), "SECRET_KEY": settings.SECRET_KEY}

    with live_app(env, name="dropped-connection-web") as app:
        session = app.session_for(annotator)
        page = session.get(f"{app.url}/annotate/", headers=HTMX, timeout=30)
        comparison_id = int(COMPARISON_ID.search(page.text).group(1))
        submit = f"{app.url}/annotate/{comparison_id}/judge/"
        answers = []

        # The judgment's transaction updates the comparison's row after inserting the judgment; a
        # lock held here stops it there, mid-transaction, where its connection is then terminated.
        with transaction.atomic():
            Comparison.objects.select_for_update().get(pk=comparison_id)
            request = threading.Thread(target=lambda: answers.append(
                session.post(submit, {"preference": "2"}, headers=HTMX, timeout=30)))
            request.start()
            (pid,) = wait_for(waiting_backends, timeout=20, message="the submit to wait on the row lock")
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            request.join(timeout=30)

        (dropped,) = answers
        assert dropped.status_code == 503
        assert dropped.headers["X-Error-Message"] == DATABASE_UNAVAILABLE
        assert not Judgment.objects.exists()

        resubmitted = session.post(submit, {"preference": "2"}, headers=HTMX, timeout=30)
        assert resubmitted.status_code == 200 and SAVED in resubmitted.text
    assert list(Judgment.objects.values_list("annotator_id", "comparison_id")) == [(annotator.pk, comparison_id)]
    assert Comparison.objects.get(pk=comparison_id).judgment_count == 1
