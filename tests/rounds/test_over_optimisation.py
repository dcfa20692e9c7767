"""Goodhart, staged: a policy over-optimised against its reward model is not promoted, because people
decide; a round that helps is.

Simulated people judge by a rule the reward model can only partly learn from the training pairs:
plainer words (a larger share of function words) are better, up to half the words; past that a
reply reads as babble and loses. The base policy's replies have about 16% function words and
rarely pass half, so its pairs teach the reward model "more function words, better" and barely
show the peak. With a very small beta, a large learning rate and many epochs, DPO drives the
policy far past the peak (about 65% function words, "a a that the", in trial runs): the reward
model prefers its replies while people prefer the serving policy's. A moderate setting moves the
policy to about a third function words, which people prefer.
"""

import pytest

from preference_app.core import roles
from preference_app.core.models import ModelVersion, TrainingRound
from preference_app.core.services import builtin_prompts_load
from preference_app.rounds import services
from tests.conftest import make_user, wait_for
from tests.rounds.simulated_annotators import judge_round, plainer_words_without_babble

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROUND = {
    "prompts_per_round": 48, "candidates_per_prompt": 4, "max_new_tokens": 32, "judgment_target": 96,
    "batch_size": 8, "max_length": 256, "reward_learning_rate": 3e-4, "reward_epochs": 2, "head_to_head": False,
    "eval_max_new_tokens": 32, "evaluation_prompts": 50, "verdict_judgments": 50, "seed": 1,
    # The guard would refuse the over-optimised policy before people saw it (test_policy_data.py
    # shows that); here people are to judge it.
    "kl_guard": 1000.0, "eos_drop_guard": 1.0,
}
# Each verdict rests on 50 single head-to-heads: the standard error of a win rate is at most 0.071,
# so the gaps asserted below (reward model above 0.7 while people are below 0.5; in trial runs 0.94
# against 0.40 with a milder babble rule, and 0.98 against 0.91 for the helpful round) are several
# standard errors wide.
OVER_OPTIMISED = {**ROUND, "beta": 0.01, "learning_rate": 5e-3, "epochs": 20}
MODERATE = {**ROUND, "beta": 0.01, "learning_rate": 1e-3, "epochs": 8}


def run_round(settings_values, annotators) -> TrainingRound:
    training_round = services.round_start(settings_values=settings_values)
    collecting = wait_for(lambda: TrainingRound.objects.filter(pk=training_round.pk, status__in=["collecting", "failed"]).first(),
                          timeout=300, message=f"round {training_round.number} to collect")
    assert collecting.status == "collecting", collecting.error
    judge_round(training_round, annotators, plainer_words_without_babble, source="generated")
    awaiting = wait_for(
        lambda: TrainingRound.objects.filter(pk=training_round.pk, status__in=["awaiting_verdict", "failed"]).first(),
        timeout=900, message=f"round {training_round.number} to be evaluated",
    )
    assert awaiting.status == "awaiting_verdict", awaiting.error
    judge_round(training_round, annotators, plainer_words_without_babble, source="verdict")
    done = TrainingRound.objects.get(pk=training_round.pk)
    print(f"round {done.number}: " + ", ".join(
        f"{key}={done.metrics.get(key)}" for key in (
            "reward_held_out_accuracy", "reward_model_win_rate", "human_win_rate", "human_win_rate_low",
            "reward_accuracy_on_new_replies", "kl_k3", "eos_rate_new", "eos_rate_serving", "promoted", "warnings")))
    assert done.status == "completed"
    return done


def test_an_over_optimised_policy_is_refused_by_people_and_a_helpful_one_is_promoted(celery_worker, base_policy, client):
    builtin_prompts_load()
    annotators = [make_user(f"simulated-{index}", roles.ANNOTATOR) for index in range(3)]

    over = run_round(OVER_OPTIMISED, annotators)
    assert over.metrics["reward_model_win_rate"] > 0.7
    assert over.metrics["human_win_rate"] < 0.5
    assert over.metrics["promoted"] is False
    assert ModelVersion.objects.get(kind="policy", is_serving=True) == base_policy
    assert over.metrics["warnings"]
    admin = make_user("boss", roles.ADMIN, is_staff=True)
    client.force_login(admin)
    page = client.get("/rounds/").content.decode()
    assert f"Warning: {over.metrics['warnings'][0]}" in page

    helpful = run_round(MODERATE, annotators)
    assert helpful.metrics["promoted"] is True
    assert ModelVersion.objects.get(kind="policy", is_serving=True).training_round_id == helpful.pk
