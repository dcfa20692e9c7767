"""Simulated annotators for round tests: a hidden rule judges every comparison in a round's queue.

The rule prefers the reply in plainer words, measured as the larger share of common function words
("the", "to", "you", ...): a tiny policy can learn it from a few dozen pairs. A stricter variant
has a peak, as people's taste does: a reply of six words or more that is over half function words
reads as babble ("a a that the it a") and loses to any reply that is not babble, the more so the
further it goes; and a reply of one or two words says nothing, whatever its words. The tiny base
policy's replies are short word salads that almost never babble at length, so pairs judged from
them barely show the peak.
"""

from preference_app.core.models import Comparison, TrainingRound
from preference_app.core.services import judgment_submit
from preference_app.rounds import services
from tests.conftest import wait_for

FUNCTION_WORDS = {"the", "a", "to", "of", "and", "i", "you", "my", "in", "is", "for", "it", "that", "how", "what", "with"}


def function_word_share(text: str) -> float:
    words = text.lower().split()
    return sum(word.strip(".,?!") in FUNCTION_WORDS for word in words) / len(words) if words else 0.0


def plainer_words(first, second) -> float:
    """1 if `first` has the larger share of function words, 0.5 if equal, else 0."""
    first_share, second_share = function_word_share(first.text), function_word_share(second.text)
    if first_share == second_share:
        return 0.5
    return 1.0 if first_share > second_share else 0.0


BABBLE_SHARE = 0.5
BABBLE_WORDS = 6
SAYS_SOMETHING_WORDS = 3


def plain_not_babble(text: str) -> float:
    """The share of function words; 0 for a reply too short to say anything; minus the share for
    babble (below any reply that is not)."""
    share, words = function_word_share(text), len(text.split())
    if share > BABBLE_SHARE and words >= BABBLE_WORDS:
        return -share
    return share if words >= SAYS_SOMETHING_WORDS else 0.0


def plainer_words_without_babble(first, second) -> float:
    """1 if `first` scores higher by `plain_not_babble`, 0.5 if equal, else 0."""
    first_score, second_score = plain_not_babble(first.text), plain_not_babble(second.text)
    if first_score == second_score:
        return 0.5
    return 1.0 if first_score > second_score else 0.0


def judge_round(training_round, annotators, rule, *, source=None) -> int:
    """Judge each of the round's comparisons (of `source`, if given) once by `rule`; returns how many."""
    comparisons = Comparison.objects.filter(training_round=training_round).select_related("candidate_a", "candidate_b")
    if source is not None:
        comparisons = comparisons.filter(source=source)
    judged = 0
    for index, comparison in enumerate(comparisons.order_by("id")):
        preference = rule(comparison.candidate_a, comparison.candidate_b)
        choice = {1.0: "a", 0.0: "b", 0.5: "tie"}[preference]
        judgment_submit(annotator=annotators[index % len(annotators)], comparison=comparison, choice=choice,
                        strength=None if choice == "tie" else 2, left_candidate="a" if index % 2 else "b",
                        seconds_spent=5.0)
        judged += 1
    return judged


def round_run_and_judged(settings_values, annotators, rule) -> TrainingRound:
    """Start a round on the real worker; the annotators judge its comparisons by `rule`, then its
    blind head-to-heads, which completes it. Returns the completed round."""
    training_round = services.round_start(settings_values=settings_values)
    in_status = TrainingRound.objects.filter(pk=training_round.pk).filter
    collecting = wait_for(lambda: in_status(status__in=["collecting", "failed"]).first(), timeout=300,
                          message=f"round {training_round.number} to collect")
    assert collecting.status == "collecting", collecting.error
    judge_round(training_round, annotators, rule, source="generated")
    awaiting = wait_for(lambda: in_status(status__in=["awaiting_verdict", "completed", "failed"]).first(), timeout=900,
                        message=f"round {training_round.number} to be evaluated")
    assert awaiting.status != "failed", awaiting.error
    judge_round(training_round, annotators, rule, source="verdict")
    done = TrainingRound.objects.get(pk=training_round.pk)
    assert done.status == "completed", done.status
    return done
