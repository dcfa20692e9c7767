"""Goodhart, staged: a policy over-optimised against its reward model is not promoted, because people
decide; a round with sane settings that helps is.

Simulated people judge by a rule the reward model can only partly learn from the training pairs:
plainer words (a larger share of function words) are better, but a reply of six words or more
that is over half function words reads as babble and loses, and a reply of one or two words says
nothing. The base policy's replies are short word salads with about 16% function words that rarely
babble at length, so its pairs teach the reward model "more function words, better" and barely
show the peak. With a very small beta, a large learning rate and many epochs, DPO drives the
policy far past the peak: the reward model prefers its replies while people prefer the serving
policy's. Sane settings (the end-to-end test's) move the policy a little, the way people prefer.
"""

import pytest

from preference_app.core import roles
from preference_app.core.models import ModelVersion, TrainingRound
from preference_app.core.prompts import builtin_prompts_load
from tests.conftest import make_user
from tests.rounds.simulated_annotators import plainer_words_without_babble, round_run_and_judged

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROUND = {
    "prompts_per_round": 48, "candidates_per_prompt": 4, "max_new_tokens": 32, "judgment_target": 96,
    "batch_size": 8, "max_length": 256, "reward_learning_rate": 3e-4, "reward_epochs": 2, "head_to_head": False,
    "eval_max_new_tokens": 32, "evaluation_prompts": 50, "verdict_judgments": 50, "seed": 1,
    # The guard would refuse the over-optimised policy before people saw it (test_policy_data.py
    # shows that); here people are to judge it.
    "kl_guard": 1000.0, "eos_drop_guard": 1.0,
    # A reward model fine-tuned from the policy is what an over-optimised policy learns to please;
    # the frozen-feature probe that "auto" picks for this few pairs is not fooled the same way.
    "reward_method": "finetune",
}
# Each verdict rests on 50 single head-to-heads: the standard error of a win rate is at most 0.071.
# The over-optimised round's gap (reward model above 0.7 while people are below 0.5; 0.86 against
# 0.24 in the last trial run, KL 126 nats) is several standard errors wide. The sane round's margin
# is narrow: people preferred it in 0.59 of the pairs, the lower end of the 90% interval 0.474
# against the 0.45 needed. The run is deterministic (fixed seeds, one torch thread per worker), so it
# passes reproducibly on this machine; a change to sampling or training will move these figures.
OVER_OPTIMISED = {**ROUND, "beta": 0.01, "learning_rate": 5e-3, "epochs": 20}
SANE = {**ROUND, "beta": 0.1, "learning_rate": 3e-4, "epochs": 2}


def run_round(settings_values, annotators) -> TrainingRound:
    done = round_run_and_judged(settings_values, annotators, plainer_words_without_babble)
    print(f"round {done.number}: " + ", ".join(
        f"{key}={done.metrics.get(key)}" for key in (
            "reward_held_out_accuracy", "reward_model_win_rate", "human_win_rate", "human_win_rate_low",
            "reward_accuracy_on_new_replies", "kl_k3", "eos_rate_new", "eos_rate_serving", "promoted", "warnings")))
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

    helpful = run_round(SANE, annotators)
    assert helpful.metrics["promoted"] is True
    assert ModelVersion.objects.get(kind="policy", is_serving=True).training_round_id == helpful.pk
