"""`assignment_judge`: what was clicked on screen becomes a judgment of the stored candidates."""

from datetime import timedelta

import pytest

from preference_app.annotation.models import Assignment
from preference_app.annotation.services import assignment_judge, assignment_next, preference_to_choice
from preference_app.core import roles
from preference_app.core.errors import InvalidInput
from preference_app.core.models import Judgment
from tests.annotation.conftest import make_comparison
from tests.conftest import make_user


@pytest.mark.parametrize(
    "preference, left, expected",
    [
        ("1", "a", ("a", 4)),
        ("4", "a", ("a", 1)),
        ("5", "a", ("b", 1)),
        ("8", "a", ("b", 4)),
        ("1", "b", ("b", 4)),
        ("3", "b", ("b", 2)),
        ("6", "b", ("a", 2)),
        ("7", "b", ("a", 3)),
        ("tie", "b", ("tie", None)),
        ("both_bad", "a", ("both_bad", None)),
    ],
)
def test_scale_points_are_read_through_the_side_shown_on_the_left(preference, left, expected):
    assert preference_to_choice(preference=preference, left_candidate=left) == expected


def test_a_point_off_the_scale_is_rejected():
    with pytest.raises(InvalidInput, match="Choose a point"):
        preference_to_choice(preference="9", left_candidate="a")


def test_the_judgment_records_side_and_time_from_the_assignment(annotator, db):
    comparison = make_comparison()
    assignment = assignment_next(annotator=annotator)
    outcome = assignment_judge(
        annotator=annotator,
        comparison_id=comparison.pk,
        preference="2",
        rationale="  More precise. ",
        flags=["unsafe"],
        now=assignment.served_at + timedelta(seconds=42.5),
    )
    judgment = Judgment.objects.get()
    assert outcome.created and outcome.judgment == judgment
    expected_choice = assignment.left_candidate  # "2" means the left one is better.
    assert (judgment.choice, judgment.strength, judgment.left_candidate) == (expected_choice, 3, assignment.left_candidate)
    assert (judgment.rationale, judgment.flags, judgment.seconds_spent) == ("More precise.", ["unsafe"], 42.5)
    assert Assignment.objects.get().status == Assignment.Status.JUDGED


def test_submitting_twice_stores_one_judgment_and_says_the_first_is_kept(annotator, db):
    comparison = make_comparison()
    assignment_next(annotator=annotator)
    first = assignment_judge(annotator=annotator, comparison_id=comparison.pk, preference="1")
    second = assignment_judge(annotator=annotator, comparison_id=comparison.pk, preference="8")
    assert first.created and not second.created
    assert Judgment.objects.count() == 1
    assert Judgment.objects.get().strength == 4 and second.judgment.pk == first.judgment.pk


def test_a_comparison_never_served_to_the_annotator_cannot_be_judged(annotator, db):
    comparison = make_comparison()
    assignment_next(annotator=make_user("ann2", roles.ANNOTATOR))
    with pytest.raises(InvalidInput, match="not given to you"):
        assignment_judge(annotator=annotator, comparison_id=comparison.pk, preference="1")
    assert Judgment.objects.count() == 0


def test_a_judgment_after_the_lease_expired_is_still_kept(annotator, db):
    comparison = make_comparison()
    assignment = assignment_next(annotator=annotator)
    outcome = assignment_judge(
        annotator=annotator, comparison_id=comparison.pk, preference="tie", now=assignment.expires_at + timedelta(hours=2)
    )
    # judgment_submit caps time spent at an hour so a forgotten tab cannot skew statistics.
    assert outcome.created and outcome.judgment.seconds_spent == 3600.0
