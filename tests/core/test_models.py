"""Database constraints that keep the preference data consistent, whatever code writes it."""

import pytest
from django.db import IntegrityError, transaction

from preference_app.core.models import Comparison, Judgment, ModelVersion


def judge(comparison, annotator, **fields):
    values = {"choice": Judgment.Choice.A, "strength": 2, "left_candidate": Judgment.Side.B, **fields}
    return Judgment.objects.create(comparison=comparison, annotator=annotator, **values)


def test_second_judgment_by_the_same_annotator_is_rejected_by_the_database(comparison, annotator):
    judge(comparison, annotator)
    with pytest.raises(IntegrityError), transaction.atomic():
        judge(comparison, annotator, choice=Judgment.Choice.B)
    assert Judgment.objects.filter(comparison=comparison).count() == 1


def test_two_annotators_may_judge_the_same_comparison(comparison, annotator, researcher):
    judge(comparison, annotator)
    judge(comparison, researcher)
    assert comparison.judgments.count() == 2


@pytest.mark.parametrize("strength", [0, 5, None])
def test_a_preference_needs_a_strength_from_one_to_four(comparison, annotator, strength):
    with pytest.raises(IntegrityError), transaction.atomic():
        judge(comparison, annotator, strength=strength)


def test_a_tie_carries_no_strength(comparison, annotator):
    with pytest.raises(IntegrityError), transaction.atomic():
        judge(comparison, annotator, choice=Judgment.Choice.TIE, strength=3)
    judge(comparison, annotator, choice=Judgment.Choice.TIE, strength=None)


def test_a_candidate_cannot_be_compared_with_itself(comparison):
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.create(
            conversation=comparison.conversation, context_length=1,
            candidate_a=comparison.candidate_a, candidate_b=comparison.candidate_a,
        )


def test_only_one_policy_serves_at_a_time(db):
    ModelVersion.objects.create(name="p1", kind=ModelVersion.Kind.POLICY, path="/m/1", base_model_id="x", is_serving=True)
    ModelVersion.objects.create(name="r1", kind=ModelVersion.Kind.REWARD, path="/m/r", base_model_id="x", is_serving=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(name="p2", kind=ModelVersion.Kind.POLICY, path="/m/2", base_model_id="x", is_serving=True)
