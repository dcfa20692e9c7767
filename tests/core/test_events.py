"""`core.events`: what the apps above core hear of, and when."""

import logging

import pytest
from django.db import transaction

from preference_app.core import events
from preference_app.core.models import Judgment
from preference_app.core.services import judgment_submit


@pytest.fixture
def heard():
    """Receivers connected for one test: what each heard, and one that always fails."""
    calls = []

    def listener(sender, comparison, **kwargs):
        calls.append(comparison.pk)

    events.judgment_recorded.connect(listener)
    yield calls
    events.judgment_recorded.disconnect(listener)


@pytest.fixture
def failing_receiver():
    def broken(sender, **kwargs):
        raise RuntimeError("The subscriber is broken.")

    events.judgment_recorded.connect(broken)
    yield
    events.judgment_recorded.disconnect(broken)


def judge(comparison, annotator):
    return judgment_submit(annotator=annotator, comparison=comparison, choice="a", strength=2, left_candidate="a")


def test_subscribers_hear_of_a_judgment_only_once_it_has_committed(comparison, annotator, heard,
                                                                    django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        judge(comparison, annotator)
        assert heard == []
    for callback in callbacks:
        callback()
    assert heard == [comparison.pk]


def test_a_second_submit_of_the_same_judgment_tells_nobody(comparison, annotator, heard,
                                                           django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        judge(comparison, annotator)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        judge(comparison, annotator)
    assert callbacks == [] and heard == [comparison.pk]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_judgment_tells_nobody(comparison, annotator, heard):
    with pytest.raises(RuntimeError), transaction.atomic():
        judge(comparison, annotator)
        raise RuntimeError("The request failed after the judgment was written.")
    assert heard == [] and not Judgment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_failing_subscriber_is_logged_and_neither_the_judgment_nor_other_subscribers_suffer(
    comparison, annotator, failing_receiver, heard, caplog
):
    # failing_receiver is requested before heard, so it is connected first and runs first.
    with caplog.at_level(logging.ERROR, logger="django.dispatch"):
        outcome = judge(comparison, annotator)
    assert outcome.created and Judgment.objects.filter(pk=outcome.judgment.pk).exists()
    assert heard == [comparison.pk]
    assert "The subscriber is broken." in caplog.text
