"""`judgment_submit`: validation, and one stored judgment however often it is submitted."""

import pytest

from preference_app.core.errors import InvalidInput
from preference_app.core.models import Judgment
from preference_app.core.services import judgment_submit


def submit(comparison, annotator, **overrides):
    values = dict(choice="a", strength=3, left_candidate="b", rationale="Clearer.", seconds_spent=12.5)
    values.update(overrides)
    return judgment_submit(annotator=annotator, comparison=comparison, **values)


def test_a_judgment_is_stored_with_every_field(comparison, annotator):
    outcome = submit(comparison, annotator, flags=["unsafe"])
    stored = Judgment.objects.get()
    assert outcome.created and outcome.judgment == stored
    assert (stored.choice, stored.strength, stored.left_candidate, stored.rationale, stored.flags, stored.seconds_spent) == (
        "a", 3, "b", "Clearer.", ["unsafe"], 12.5)


def test_second_submit_stores_one_judgment_and_returns_the_first(comparison, annotator):
    first = submit(comparison, annotator)
    second = submit(comparison, annotator, choice="b", strength=1)
    assert first.created and not second.created
    assert second.judgment.pk == first.judgment.pk
    assert Judgment.objects.get().choice == "a"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"choice": "maybe"}, "Choice must be one of"),
        ({"strength": 0}, "strength from 1"),
        ({"strength": None}, "strength from 1"),
        ({"choice": "tie", "strength": 2}, "carry no strength"),
        ({"left_candidate": "c"}, "left_candidate"),
        ({"flags": ["boring"]}, "Flags must be among"),
        ({"seconds_spent": -1}, "non-negative"),
        ({"rationale": "x" * 5001}, "at most 5000"),
    ],
)
def test_bad_input_is_rejected_and_nothing_is_stored(comparison, annotator, overrides, message):
    with pytest.raises(InvalidInput, match=message):
        submit(comparison, annotator, **overrides)
    assert Judgment.objects.count() == 0


def test_a_tie_and_a_both_bad_are_stored_without_strength(comparison, annotator, researcher):
    submit(comparison, annotator, choice="tie", strength=None)
    submit(comparison, researcher, choice="both_bad", strength=None)
    assert list(Judgment.objects.values_list("choice", "strength")) == [("tie", None), ("both_bad", None)]


def test_the_comparison_counts_each_annotators_judgment_once(comparison, annotator, researcher):
    submit(comparison, annotator)
    submit(comparison, annotator)
    submit(comparison, researcher, choice="b", strength=1)
    comparison.refresh_from_db()
    assert comparison.judgment_count == 2 == comparison.judgments.count()
