"""`annotator_progress`: judged today, judged in total and still waiting, as the comparison page shows them."""

from django.core.cache import caches

from preference_app.annotation.selectors import WAITING_COUNT_CAP, annotator_progress
from preference_app.annotation.services import assignment_judge, assignment_next, assignment_skip
from preference_app.core import roles
from preference_app.core.models import Comparison
from tests.annotation.conftest import make_comparison
from tests.conftest import make_user


def test_waiting_leaves_out_what_the_annotator_judged_skipped_or_holds(annotator, db):
    for _ in range(5):
        make_comparison(overlap_target=2)
    assert annotator_progress(annotator=annotator).waiting == 5

    held = assignment_next(annotator=annotator)
    assert annotator_progress(annotator=annotator).waiting == 4

    assignment_judge(annotator=annotator, comparison_id=held.comparison_id, preference="2")
    skipped = assignment_next(annotator=annotator)
    assignment_skip(annotator=annotator, comparison_id=skipped.comparison_id)
    progress = annotator_progress(annotator=annotator)
    assert (progress.waiting, progress.judged_today, progress.judged_total) == (3, 1, 1)


def test_a_comparison_another_annotator_is_looking_at_still_counts_as_waiting(annotator, db):
    make_comparison(overlap_target=1)
    assignment_next(annotator=make_user("ann2", roles.ANNOTATOR))
    assert annotator_progress(annotator=annotator).waiting == 1


def test_a_comparison_with_all_its_judgments_no_longer_waits(annotator, db):
    comparison = make_comparison(overlap_target=1)
    other = make_user("ann2", roles.ANNOTATOR)
    assignment_next(annotator=other)
    assignment_judge(annotator=other, comparison_id=comparison.pk, preference="tie")
    assert annotator_progress(annotator=annotator).waiting == 0


def test_waiting_stops_counting_at_the_cap_and_says_so(annotator, db):
    for _ in range(WAITING_COUNT_CAP + 1):
        make_comparison()
    progress = annotator_progress(annotator=annotator)
    assert progress.waiting == WAITING_COUNT_CAP
    assert progress.waiting_label == f"{WAITING_COUNT_CAP}+"


def test_a_count_at_the_cap_is_remembered_and_a_short_queue_is_counted_afresh(annotator, db):
    for _ in range(WAITING_COUNT_CAP + 1):
        make_comparison(overlap_target=1)
    assert annotator_progress(annotator=annotator).waiting == WAITING_COUNT_CAP

    # Others finish all but three comparisons; while the count at the cap is remembered the page
    # still says "100+", and once it is forgotten the short queue is counted exactly, every time.
    finished = Comparison.objects.order_by("id").values_list("id", flat=True)[: WAITING_COUNT_CAP - 2]
    Comparison.objects.filter(id__in=list(finished)).update(judgment_count=1)
    assert annotator_progress(annotator=annotator).waiting_label == f"{WAITING_COUNT_CAP}+"
    caches["process"].clear()
    assert annotator_progress(annotator=annotator).waiting == 3
    assignment_next(annotator=annotator)
    assert annotator_progress(annotator=annotator).waiting == 2
