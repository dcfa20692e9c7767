"""Promotion is decided by people: blind head-to-heads of the new policy against the serving one."""

import pytest
from django.db.models import F

from preference_app.core import roles
from preference_app.core.models import Candidate, Comparison, Conversation, ModelVersion, TrainingRound, Turn
from preference_app.core.services import judgment_submit
from preference_app.rounds import services, verdicts
from preference_app.rounds.round_settings import RoundSettings
from tests.conftest import make_user

# Transactional: people's judgments reach the round through core's judgment_recorded event, which
# is sent only once a judgment's transaction commits.
pytestmark = pytest.mark.django_db(transaction=True)


def a_round_awaiting_the_verdict(*, head_to_heads=10, reward_model_prefers="new", **settings_values):
    """A round whose evaluation created `head_to_heads` blind pairs, the new policy first in every other one."""
    base = ModelVersion.objects.create(name="base", kind="policy", path="/base", base_model_id="tiny", is_serving=True)
    config = RoundSettings(verdict_judgments=head_to_heads, **settings_values).to_dict()
    training_round = TrainingRound.objects.create(number=1, status="awaiting_verdict", config=config,
                                                  metrics={"reward_held_out_accuracy": 0.9})
    new = ModelVersion.objects.create(name="round-1-policy", kind="policy", path="/new", base_model_id="tiny",
                                      parent=base, training_round=training_round)
    ModelVersion.objects.create(name="round-1-reward", kind="reward", path="/rm", base_model_id="tiny",
                                training_round=training_round)
    rewards = {}
    for number in range(head_to_heads):
        conversation = Conversation.objects.create(source=Conversation.Source.EVALUATION)
        Turn.objects.create(conversation=conversation, index=0, role="user", text=f"Evaluation prompt {number}")
        new_reply = Candidate.objects.create(conversation=conversation, context_length=1, text="new", model_version=new)
        old_reply = Candidate.objects.create(conversation=conversation, context_length=1, text="old", model_version=base)
        first, second = (new_reply, old_reply) if number % 2 else (old_reply, new_reply)
        comparison = Comparison.objects.create(conversation=conversation, context_length=1, candidate_a=first,
                                               candidate_b=second, training_round=training_round,
                                               source=Comparison.Source.VERDICT)
        rewards[str(comparison.pk)] = [1.0, 0.0] if reward_model_prefers == "new" else [0.0, 1.0]
    TrainingRound.objects.filter(pk=training_round.pk).update(metrics={**training_round.metrics, "verdict_rewards": rewards})
    return TrainingRound.objects.get(pk=training_round.pk), new, base


def people_prefer(winner: str, training_round, annotator, *, count=None, new_policy):
    """Judge the round's head-to-heads, always for `winner` ('new' or 'serving')."""
    comparisons = Comparison.objects.filter(training_round=training_round, source="verdict").order_by("id")
    for comparison in list(comparisons)[:count]:
        new_is_first = comparison.candidate_a.model_version_id == new_policy.pk
        choice = "a" if new_is_first == (winner == "new") else "b"
        judgment_submit(annotator=annotator, comparison=comparison, choice=choice, strength=2, left_candidate="a")


def test_people_who_prefer_the_new_policy_get_it_promoted_once_enough_judgments_arrive():
    training_round, new, base = a_round_awaiting_the_verdict(head_to_heads=12)
    annotator = make_user("person", roles.ANNOTATOR)
    people_prefer("new", training_round, annotator, count=11, new_policy=new)
    waiting = TrainingRound.objects.get(pk=training_round.pk)
    assert waiting.status == "awaiting_verdict"
    assert waiting.metrics["human_judgments"] == 11
    people_prefer("new", training_round, make_user("second", roles.ANNOTATOR), count=1, new_policy=new)
    done = TrainingRound.objects.get(pk=training_round.pk)
    assert done.status == "completed"
    assert done.metrics["promoted"] is True and done.metrics["verdict_by"] == "people"
    assert ModelVersion.objects.get(kind="policy", is_serving=True) == new
    assert done.metrics["reward_accuracy_on_new_replies"] == 1.0


def test_a_policy_the_reward_model_likes_but_people_reject_is_not_promoted_and_warns():
    training_round, new, base = a_round_awaiting_the_verdict(head_to_heads=10, reward_model_prefers="new")
    people_prefer("serving", training_round, make_user("person", roles.ANNOTATOR), new_policy=new)
    done = TrainingRound.objects.get(pk=training_round.pk)
    assert done.status == "completed" and done.metrics["promoted"] is False
    assert ModelVersion.objects.get(kind="policy", is_serving=True) == base
    assert done.metrics["human_win_rate"] == 0.0
    assert done.metrics["reward_accuracy_on_new_replies"] == 0.0
    assert any("pleasing the model" in warning for warning in done.metrics["warnings"])


def test_an_even_split_is_not_enough_evidence_to_promote():
    # 5 wins in 10: the 90% Wilson interval's lower end is 0.27, below the default 0.45.
    training_round, new, base = a_round_awaiting_the_verdict(head_to_heads=10)
    annotator = make_user("person", roles.ANNOTATOR)
    people_prefer("new", training_round, annotator, count=5, new_policy=new)
    comparisons = Comparison.objects.filter(training_round=training_round, source="verdict").order_by("id")[5:]
    for comparison in comparisons:
        new_is_first = comparison.candidate_a.model_version_id == new.pk
        judgment_submit(annotator=annotator, comparison=comparison, choice="b" if new_is_first else "a", strength=1,
                        left_candidate="b")
    done = TrainingRound.objects.get(pk=training_round.pk)
    assert done.metrics["human_win_rate"] == 0.5
    assert done.metrics["promoted"] is False


def test_an_admin_decides_by_hand_and_the_unjudged_head_to_heads_leave_the_queue():
    training_round, new, base = a_round_awaiting_the_verdict(head_to_heads=6)
    people_prefer("new", training_round, make_user("person", roles.ANNOTATOR), count=2, new_policy=new)
    assert services.round_verdict_decide(round_id=training_round.pk, promote=True)
    done = TrainingRound.objects.get(pk=training_round.pk)
    assert (done.status, done.metrics["promoted"], done.metrics["verdict_by"]) == ("completed", True, "admin")
    assert ModelVersion.objects.get(kind="policy", is_serving=True) == new
    still_open = Comparison.objects.filter(training_round=training_round, judgment_count__lt=F("overlap_target"))
    assert not still_open.exists()
    assert not services.round_verdict_decide(round_id=training_round.pk, promote=False)  # Already decided.


def test_ties_count_half_and_both_bad_is_left_out():
    tally = verdicts.Tally(new_wins=3, serving_wins=1, ties=2, both_bad=4)
    result = verdicts.estimate(tally, confidence=0.9)
    assert result.judgments == 6
    assert result.p_new_beats_serving == pytest.approx(4 / 6)


def test_the_wilson_interval_matches_a_hand_computed_case():
    # 8 of 10 at 95% (z = 1.95996): Wilson gives 0.4902 to 0.9433.
    low, high = verdicts.wilson_interval(8, 10, 0.95)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def auto_loop_round(metrics: dict) -> TrainingRound:
    config = RoundSettings(auto_rounds=2).to_dict()
    ModelVersion.objects.create(name="base", kind="policy", path="/base", base_model_id="tiny", is_serving=True)
    return TrainingRound.objects.create(number=1, status="completed", config=config, metrics=metrics, step="Done")


def test_the_auto_loop_goes_on_only_when_people_saw_a_gain_beyond_their_interval():
    gained = auto_loop_round({"promoted": True, "verdict_by": "people", "human_win_rate_low": 0.56})
    follow_up = services.round_continue_loop(round_id=gained.pk)
    assert follow_up is not None and follow_up.config["auto_rounds"] == 1


@pytest.mark.parametrize("metrics", [
    {"promoted": True, "verdict_by": "people", "human_win_rate_low": 0.46},  # Not worse, but no clear gain.
    {"promoted": False, "verdict_by": "people", "human_win_rate_low": 0.0},  # A total loss is not read as 0.5.
    {"promoted": True, "verdict_by": "admin", "human_win_rate_low": None},  # Decided by hand: no evidence.
])
def test_the_auto_loop_stops_without_a_human_gain(metrics):
    training_round = auto_loop_round(metrics)
    assert services.round_continue_loop(round_id=training_round.pk) is None
    assert TrainingRound.objects.count() == 1
    assert "auto-loop stopped" in TrainingRound.objects.get(pk=training_round.pk).step
