"""Concurrent `assignment_next` calls on PostgreSQL: row locks with SKIP LOCKED keep slots apart."""

import threading

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection, connections

from preference_app.annotation.models import Assignment
from preference_app.annotation.services import assignment_next
from preference_app.core import roles
from tests.annotation.conftest import make_comparison
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)

ANNOTATORS = 12


def lease_all_at_once(users):
    """Every user asks for work at the same moment, each on its own database connection."""
    barrier = threading.Barrier(len(users))
    results, errors = {}, []

    def ask(user):
        try:
            barrier.wait()
            assignment = assignment_next(annotator=user)
            results[user.pk] = assignment.comparison_id if assignment else None
        except Exception as error:  # Collected and re-raised in the test thread.
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ask, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return results


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("Row locking with SKIP LOCKED is a PostgreSQL feature; SQLite serialises writers instead.")
    # A transactional test empties every table, including the role groups made by a migration.
    roles.roles_ensure(Group, Permission)


def test_simultaneous_requests_never_share_a_slot(postgres_only):
    for _ in range(2 * ANNOTATORS):
        make_comparison(overlap_target=1)
    users = [make_user(f"load{number}", roles.ANNOTATOR) for number in range(ANNOTATORS)]
    results = lease_all_at_once(users)
    served = [comparison for comparison in results.values() if comparison is not None]
    assert len(served) == ANNOTATORS
    assert len(set(served)) == ANNOTATORS


def test_simultaneous_requests_never_put_a_comparison_over_its_overlap_target(postgres_only):
    shared = make_comparison(overlap_target=3)
    users = [make_user(f"load{number}", roles.ANNOTATOR) for number in range(ANNOTATORS)]
    results = lease_all_at_once(users)
    holders = Assignment.objects.filter(comparison=shared).count()
    # A request that finds the row locked skips it rather than waiting, so fewer than three may
    # hold it after one burst; more than three never may.
    assert 1 <= holders <= 3
    assert sum(comparison is not None for comparison in results.values()) == holders
