"""`assignment_next`: which comparison an annotator is given, and the lease that reserves it."""

from datetime import timedelta

from django.utils import timezone

from preference_app.annotation.models import Assignment
from preference_app.annotation.services import LEASE_DURATION, assignment_judge, assignment_next, assignment_skip
from preference_app.core import roles
from preference_app.core.models import Conversation, TrainingRound
from tests.annotation.conftest import make_comparison
from tests.conftest import make_user


def test_it_serves_the_oldest_comparison_with_a_lease(annotator, comparisons):
    before = timezone.now()
    assignment = assignment_next(annotator=annotator)
    assert assignment.comparison == comparisons[0]
    assert assignment.status == Assignment.Status.OPEN
    assert assignment.left_candidate in ("a", "b")
    assert before <= assignment.served_at <= timezone.now()
    assert assignment.expires_at == assignment.served_at + LEASE_DURATION


def test_asking_again_returns_the_same_assignment_with_the_same_side(annotator, comparisons):
    first = assignment_next(annotator=annotator)
    again = assignment_next(annotator=annotator)
    assert (again.pk, again.left_candidate, again.served_at) == (first.pk, first.left_candidate, first.served_at)
    assert Assignment.objects.count() == 1


def test_oldest_round_comes_first_and_comparisons_without_a_round_last(annotator, db):
    # Rounds are numbered in the order they are created; their comparisons here are not.
    first_round = TrainingRound.objects.create(number=1)
    second_round = TrainingRound.objects.create(number=2)
    loose = make_comparison()
    newer = make_comparison(training_round=second_round)
    older = make_comparison(training_round=first_round)
    served = []
    for _ in range(3):
        assignment = assignment_next(annotator=annotator)
        served.append(assignment.comparison)
        assignment_judge(annotator=annotator, comparison_id=assignment.comparison_id, preference="tie")
    assert served == [older, newer, loose]


def test_a_leased_slot_is_not_given_to_a_second_annotator(annotator, comparisons):
    other = make_user("ann2", roles.ANNOTATOR)
    mine = assignment_next(annotator=annotator)
    theirs = assignment_next(annotator=other)
    assert mine.comparison != theirs.comparison


def test_an_overlap_of_two_gives_one_comparison_to_two_annotators_and_no_third(annotator, db):
    shared = make_comparison(overlap_target=2)
    later = make_comparison()
    second, third = make_user("ann2", roles.ANNOTATOR), make_user("ann3", roles.ANNOTATOR)
    assert assignment_next(annotator=annotator).comparison == shared
    assert assignment_next(annotator=second).comparison == shared
    assert assignment_next(annotator=third).comparison == later


def test_judged_comparisons_count_against_the_overlap_target(annotator, db):
    judged = make_comparison()
    assignment_next(annotator=annotator)
    assignment_judge(annotator=annotator, comparison_id=judged.pk, preference="1")
    assert assignment_next(annotator=make_user("ann2", roles.ANNOTATOR)) is None


def test_an_annotator_never_gets_a_comparison_they_judged(annotator, db):
    comparison = make_comparison(overlap_target=3)
    assignment_next(annotator=annotator)
    assignment_judge(annotator=annotator, comparison_id=comparison.pk, preference="8")
    assert assignment_next(annotator=annotator) is None


def test_an_expired_lease_gives_the_slot_back(annotator, db):
    comparison = make_comparison()
    assignment_next(annotator=annotator)
    other = make_user("ann2", roles.ANNOTATOR)
    assert assignment_next(annotator=other) is None
    later = timezone.now() + LEASE_DURATION + timedelta(seconds=1)
    assert assignment_next(annotator=other, now=later).comparison == comparison


def test_an_annotator_returning_after_expiry_gets_the_comparison_again_if_still_free(annotator, db):
    comparison = make_comparison()
    first = assignment_next(annotator=annotator)
    later = timezone.now() + LEASE_DURATION + timedelta(minutes=1)
    again = assignment_next(annotator=annotator, now=later)
    assert again.comparison == comparison and again.pk == first.pk
    assert again.left_candidate == first.left_candidate
    assert again.served_at == later and again.expires_at == later + LEASE_DURATION


def test_skipped_comparisons_are_not_served_again_but_stay_open_to_others(annotator, comparisons):
    first = assignment_next(annotator=annotator)
    assignment_skip(annotator=annotator, comparison_id=first.comparison_id)
    assert assignment_next(annotator=annotator).comparison == comparisons[1]
    assert assignment_next(annotator=make_user("ann2", roles.ANNOTATOR)).comparison == comparisons[0]


def test_a_live_chat_in_progress_is_not_served_to_anyone_else(annotator, db):
    chat = Conversation.objects.create(source=Conversation.Source.LIVE_CHAT, annotator=annotator)
    chat.turns.create(index=0, role="user", text="Hi")
    in_progress = make_comparison(conversation=chat)
    other = make_user("ann2", roles.ANNOTATOR)
    assert assignment_next(annotator=other) is None
    chat.ended = timezone.now()
    chat.save()
    assert assignment_next(annotator=other).comparison == in_progress


def test_an_empty_queue_gives_nothing(annotator, db):
    assert assignment_next(annotator=annotator) is None


def test_the_left_side_is_drawn_at_random_per_assignment(annotator, db):
    for _ in range(40):
        make_comparison()
    sides = []
    for _ in range(40):
        assignment = assignment_next(annotator=annotator)
        sides.append(assignment.left_candidate)
        assignment_skip(annotator=annotator, comparison_id=assignment.comparison_id)
    # With 40 fair draws, all on one side has probability 2 * 2**-40.
    assert set(sides) == {"a", "b"}
