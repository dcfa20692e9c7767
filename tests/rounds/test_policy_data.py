"""What the policy step trains on: reward-model-labelled on-policy pairs, best of n, and the guard."""

import json
from pathlib import Path

import pytest
from django.conf import settings

from preference_app.core import roles
from preference_app.core.models import Comparison, ModelVersion, Prompt, TrainingRound
from preference_app.core.prompts import builtin_prompts_load, text_sha256
from preference_app.rounds import services
from preference_app.rounds.evaluation_sets import evaluation_set_active_ensure
from tests.conftest import make_user, wait_for
from tests.rounds.simulated_annotators import judge_round, plainer_words

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SMALL_ROUND = {
    "prompts_per_round": 6, "candidates_per_prompt": 2, "max_new_tokens": 16, "judgment_target": 6,
    "batch_size": 4, "max_length": 128, "eval_max_new_tokens": 16, "learning_rate": 1e-4,
    "reward_learning_rate": 1e-4, "head_to_head": False, "evaluation_prompts": 6, "verdict_judgments": 6,
    "labelled_prompts": 40, "labelled_candidates": 4, "min_reward_gap": 0.1,
}


def round_through_training(settings_values) -> TrainingRound:
    """Start a round, judge its six comparisons, and wait until it is evaluated (or finished)."""
    annotator = make_user("sim", roles.ANNOTATOR)
    training_round = services.round_start(settings_values=settings_values)
    wait_for(lambda: TrainingRound.objects.filter(pk=training_round.pk, status__in=["collecting", "failed"]).first(),
             timeout=120, message="collecting")
    assert judge_round(training_round, [annotator], plainer_words) == 6
    done = wait_for(
        lambda: TrainingRound.objects.filter(pk=training_round.pk,
                                             status__in=["awaiting_verdict", "completed", "failed"]).first(),
        timeout=300, message="the evaluation",
    )
    assert done.status != "failed", done.error
    return done


def test_reward_labelled_trains_on_many_more_pairs_than_people_judged_and_none_from_evaluation_prompts(
    celery_worker, base_policy
):
    evaluation_set = evaluation_set_active_ensure()
    builtin_prompts_load()
    # An evaluation prompt that reached the prompt pool (say through an import) is never sampled.
    leaked = evaluation_set.prompts[0]
    Prompt.objects.create(text=leaked, text_sha256=text_sha256(leaked), source="imported")

    done = round_through_training({**SMALL_ROUND, "policy_data": "reward_labelled"})
    assert done.metrics["human_pairs"] <= 6
    assert done.metrics["labelled_pairs"] > 3 * done.metrics["human_pairs"]
    assert done.metrics["dpo_pairs"] == done.metrics["human_pairs"] + done.metrics["labelled_pairs"]
    assert done.metrics["dpo_epochs"] >= 1
    labelled_file = Path(settings.MODELS_DIR) / f"round-{done.number}" / "reward-labelled-pairs.jsonl"
    records = [json.loads(line) for line in labelled_file.read_text().splitlines()]
    assert len(records) == done.metrics["labelled_pairs"]
    prompts = {record["prompt"][0]["content"] for record in records}
    assert not prompts & set(evaluation_set.prompts)
    assert all(record["chosen"] != record["rejected"] for record in records)


def test_best_of_n_fine_tunes_the_policy_on_the_reward_models_best_replies(celery_worker, base_policy):
    builtin_prompts_load()
    done = round_through_training({**SMALL_ROUND, "policy_data": "best_of_n", "labelled_prompts": 12})
    assert done.metrics["sft_demonstrations"] == 12
    assert done.metrics["dpo_pairs"] == 0
    policy = ModelVersion.objects.get(training_round=done, kind="policy")
    assert Path(policy.path).name == "sft"  # The fine-tuned model itself serves as the policy.
    assert policy.config["reference_path"] == base_policy.path
    assert not ModelVersion.objects.filter(training_round=done, kind="sft").exists()


def test_the_guard_refuses_a_policy_forced_past_it_before_people_are_asked(celery_worker, base_policy):
    builtin_prompts_load()
    # A learning rate a hundred times too high and a guard no trained policy can pass.
    done = round_through_training({**SMALL_ROUND, "learning_rate": 1e-2, "epochs": 3, "kl_guard": 0.01})
    assert done.status == "completed"
    assert (done.metrics["promoted"], done.metrics["verdict_by"]) == (False, "guard")
    assert any(warning.startswith("Refused by the guard") for warning in done.metrics["warnings"])
    assert not Comparison.objects.filter(training_round=done, source="verdict").exists()
    assert ModelVersion.objects.get(kind="policy", is_serving=True) == base_policy
