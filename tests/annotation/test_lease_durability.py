"""On PostgreSQL a lease commits without waiting for the disk; a judgment always waits.

Each test runs inside one transaction, so a `SET LOCAL` made by the service is still visible
to the test afterwards.
"""

import pytest
from django.db import connection
from django.utils import timezone

from preference_app.annotation.models import Assignment
from preference_app.annotation.services import LEASE_DURATION, assignment_judge, assignment_next
from preference_app.core.models import Judgment
from tests.annotation.conftest import make_comparison


@pytest.fixture
def postgres_only(db):
    if connection.vendor != "postgresql":
        pytest.skip("Asynchronous commit is a PostgreSQL setting; SQLite has no equivalent here.")


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def test_a_new_lease_commits_without_waiting_for_the_disk(postgres_only, annotator):
    make_comparison()
    assert synchronous_commit() == "on"
    assert assignment_next(annotator=annotator) is not None
    assert synchronous_commit() == "off"


def test_a_judgment_waits_for_the_disk(postgres_only, annotator):
    comparison = make_comparison()
    now = timezone.now()
    Assignment.objects.create(
        comparison=comparison, annotator=annotator, left_candidate=Judgment.Side.A, served_at=now,
        expires_at=now + LEASE_DURATION,
    )
    assignment_judge(annotator=annotator, comparison_id=comparison.pk, preference="2")
    assert Judgment.objects.filter(comparison=comparison, annotator=annotator).exists()
    assert synchronous_commit() == "on"
