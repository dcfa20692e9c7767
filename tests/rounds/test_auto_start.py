"""Step 4 by itself: a completed round's `auto_start_after_judgments` starts the next round."""

import pytest
from django.db import transaction
from django.utils import timezone

from preference_app.core.models import TrainingRound
from preference_app.core.services import judgment_submit
from tests.rounds.test_round_flow import SMALL_ROUND

# Transactional: the round reacts to core's judgment_recorded event, sent once a judgment commits.
pytestmark = pytest.mark.django_db(transaction=True)


def completed_round(number: int, **settings_values) -> TrainingRound:
    return TrainingRound.objects.create(
        number=number, status="completed", finished=timezone.now(),
        config={**SMALL_ROUND, **settings_values},
    )


def test_the_next_round_starts_itself_once_enough_new_judgments_arrived(db, comparison, annotator, researcher, admin_user):
    completed_round(1, auto_start_after_judgments=2)
    judgment_submit(annotator=annotator, comparison=comparison, choice="a", strength=1, left_candidate="a")
    assert TrainingRound.objects.count() == 1
    judgment_submit(annotator=researcher, comparison=comparison, choice="b", strength=1, left_candidate="a")
    assert list(TrainingRound.objects.order_by("number").values_list("number", "status")) == [
        (1, "completed"), (2, "pending")]
    assert TrainingRound.objects.get(number=2).config["auto_start_after_judgments"] == 2
    judgment_submit(annotator=admin_user, comparison=comparison, choice="b", strength=1, left_candidate="a")
    assert TrainingRound.objects.count() == 2


def test_without_the_setting_judgments_start_no_round(db, comparison, annotator):
    completed_round(1)
    judgment_submit(annotator=annotator, comparison=comparison, choice="a", strength=1, left_candidate="a")
    assert TrainingRound.objects.count() == 1


def test_the_next_round_starts_only_once_the_judgment_has_committed(db, comparison, annotator):
    completed_round(1, auto_start_after_judgments=1)
    with transaction.atomic():
        judgment_submit(annotator=annotator, comparison=comparison, choice="a", strength=1, left_candidate="a")
        assert TrainingRound.objects.count() == 1
    assert TrainingRound.objects.filter(number=2, status="pending").exists()

