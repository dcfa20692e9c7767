"""The dashboard's human-judged statistics: annotator agreement and bias, and the policy leaderboard."""

import random

import pytest

from preference_app.api.pseudonyms import annotator_pseudonym
from preference_app.core.models import Candidate, Comparison, Conversation, Judgment, ModelVersion, Turn
from preference_app.core.services import judgment_submit
from preference_app.rounds import selectors
from tests.conftest import make_user


def head_to_head(first: ModelVersion, second: ModelVersion) -> Comparison:
    conversation = Conversation.objects.create(source=Conversation.Source.PROMPT)
    Turn.objects.create(conversation=conversation, index=0, role="user", text="Hi")
    a = Candidate.objects.create(conversation=conversation, context_length=1, text="one", model_version=first)
    b = Candidate.objects.create(conversation=conversation, context_length=1, text="two", model_version=second)
    return Comparison.objects.create(conversation=conversation, context_length=1, candidate_a=a, candidate_b=b)


def versions():
    return (ModelVersion.objects.create(name="round-1-policy", kind="policy", path="/1", base_model_id="x"),
            ModelVersion.objects.create(name="round-2-policy", kind="policy", path="/2", base_model_id="x"))


def test_annotator_statistics_give_agreement_left_rate_and_median_time(db):
    old, new = versions()
    first, second, third = (make_user(name, "annotator") for name in ("p", "q", "r"))
    comparisons = [head_to_head(old, new) for _ in range(2)]
    for comparison in comparisons:
        judgment_submit(annotator=first, comparison=comparison, choice="a", strength=2, left_candidate="a", seconds_spent=10)
        judgment_submit(annotator=second, comparison=comparison, choice="a", strength=2, left_candidate="b", seconds_spent=20)
    judgment_submit(annotator=third, comparison=comparisons[0], choice="b", strength=1, left_candidate="b", seconds_spent=40)
    by_name = {row.pseudonym: row for row in selectors.annotator_statistics()}
    first_row, third_row = by_name[annotator_pseudonym(first.pk)], by_name[annotator_pseudonym(third.pk)]
    assert (first_row.judgments, first_row.agreement, first_row.left_choice_rate, first_row.median_seconds) == (2, 1.0, 1.0, 10)
    assert (third_row.judgments, third_row.agreement, third_row.left_choice_rate) == (1, 0.0, 1.0)
    assert by_name[annotator_pseudonym(second.pk)].left_choice_rate == 0.0
    assert all(row.judged_today == row.judgments for row in by_name.values())


def test_the_leaderboard_ranks_the_version_humans_prefer_first(db):
    old, new = versions()
    annotators = [make_user(f"a{index}", "annotator") for index in range(8)]
    comparison = head_to_head(old, new)
    for index, annotator in enumerate(annotators):
        judgment_submit(annotator=annotator, comparison=comparison, choice="b" if index < 6 else "a", strength=2,
                        left_candidate="a")
    board = selectors.policy_leaderboard().ratings
    assert [rating.name for rating in board] == ["round-2-policy", "round-1-policy"]
    assert board[0].games == 8 and board[0].low <= board[0].rating <= board[0].high


def agreement_by_definition() -> dict[str, float]:
    """Each A/B judgment against the A/B choices of the others on its comparison, spelled out in Python:
    the most common choice wins, a tie going to the choice of the earliest of them."""
    sided = list(Judgment.objects.filter(choice__in=["a", "b"]).order_by("id"))
    agreed: dict[int, list[bool]] = {}
    for judgment in sided:
        others = [other.choice for other in sided if other.comparison_id == judgment.comparison_id and other.pk != judgment.pk]
        if others:
            majority = max(["a", "b"], key=lambda choice: (others.count(choice), -others.index(choice) if choice in others else 0))
            agreed.setdefault(judgment.annotator_id, []).append(judgment.choice == majority)
    return {annotator_pseudonym(annotator): sum(flags) / len(flags) for annotator, flags in agreed.items()}


def test_agreement_counted_by_the_database_matches_its_definition_on_random_judgments(db):
    old, new = versions()
    annotators = [make_user(f"r{index}", "annotator") for index in range(5)]
    rng = random.Random(0)
    for _ in range(40):
        comparison = head_to_head(old, new)
        for annotator in rng.sample(annotators, rng.randint(1, 5)):
            choice = rng.choice(["a", "b", "a", "b", "tie", "both_bad"])
            judgment_submit(annotator=annotator, comparison=comparison, choice=choice,
                            strength=2 if choice in ("a", "b") else None, left_candidate=rng.choice("ab"))
    expected = agreement_by_definition()
    measured = {row.pseudonym: row.agreement for row in selectors.annotator_statistics()}
    assert {name: agreement for name, agreement in measured.items() if agreement is not None} == pytest.approx(expected)
