"""Rounds whose policy step is online (PPO, RLOO, GRPO) rather than DPO: run through the real worker,
per-step metrics stored and charted, and no evaluation prompt sampled."""

import json
import math
import re
from pathlib import Path

import pytest
from django.conf import settings

from preference_app.core.errors import InvalidInput
from preference_app.core.models import ModelVersion, Prompt
from preference_app.core.prompts import builtin_prompts_load, text_sha256
from preference_app.rounds.evaluation_sets import evaluation_set_active_ensure
from preference_app.rounds.round_settings import RoundSettings
from tests.rounds.test_policy_data import SMALL_ROUND, round_through_training

# Three short steps of four prompts keep each round's online step to seconds with the tiny model;
# a learning rate ten times below SMALL_ROUND's keeps the policy within the guard's KL and EOS bounds.
ONLINE_ROUND = {**SMALL_ROUND, "learning_rate": 1e-5, "online_steps": 3, "online_prompts_per_step": 4}
PER_STEP = ("reward_mean", "kl", "entropy", "clip_fraction", "reply_length")


def rollout_prompts(training_round) -> set[str]:
    path = Path(settings.MODELS_DIR) / f"round-{training_round.number}" / "online-prompts.jsonl"
    return {json.loads(line)["prompt"][0]["content"] for line in path.read_text().splitlines()}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_ppo_round_reaches_the_verdict_with_per_step_metrics_and_no_evaluation_prompt(
    celery_worker, base_policy, admin_user, client
):
    evaluation_set = evaluation_set_active_ensure()
    builtin_prompts_load()
    # An evaluation prompt that reached the prompt pool (say through an import) is never sampled.
    leaked = evaluation_set.prompts[0]
    Prompt.objects.create(text=leaked, text_sha256=text_sha256(leaked), source="imported")

    done = round_through_training({**ONLINE_ROUND, "policy_step": "ppo", "ppo_epochs": 2})

    assert done.status == "awaiting_verdict", done.metrics.get("warnings")
    assert done.metrics["policy_step"] == "ppo"
    history = done.metrics["online_history"]
    assert [entry["step"] for entry in history] == [1, 2, 3]
    for entry in history:
        assert all(math.isfinite(entry[key]) for key in (*PER_STEP, "value_loss")), entry
        assert 0 <= entry["clip_fraction"] <= 1 and entry["entropy"] > 0 and entry["reply_length"] >= 1
    prompts = rollout_prompts(done)
    assert done.metrics["online_prompts"] == len(prompts) == 12
    assert not prompts & set(evaluation_set.prompts)
    policy = ModelVersion.objects.get(training_round=done, kind="policy")
    assert (policy.config["stage"], policy.config["reference_path"]) == ("ppo", base_policy.path)
    assert policy.metrics["steps"] == 3

    client.force_login(admin_user)
    page = client.get("/rounds/").content.decode()
    for title in ("Policy step: mean reward per step", "Policy step: KL per step",
                  "Policy step: reward against sqrt(KL)"):
        chart = re.search(rf'<svg[^>]*aria-label="{re.escape(title)}".*?</svg>', page)
        assert chart is not None, title
        assert chart.group(0).count("<circle") == 3  # One point per step.


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_grpo_round_samples_k_replies_per_prompt_and_stores_its_steps(celery_worker, base_policy):
    evaluation_set = evaluation_set_active_ensure()
    builtin_prompts_load()

    done = round_through_training({**ONLINE_ROUND, "policy_step": "grpo", "online_steps": 2,
                                   "online_samples_per_prompt": 3})

    assert done.status == "awaiting_verdict", done.metrics.get("warnings")
    assert done.metrics["policy_step"] == "grpo"
    history = done.metrics["online_history"]
    assert len(history) == 2
    for entry in history:
        assert all(math.isfinite(entry[key]) for key in PER_STEP), entry
        assert entry["value_loss"] is None  # GRPO has no critic.
    assert not rollout_prompts(done) & set(evaluation_set.prompts)
    policy = ModelVersion.objects.get(training_round=done, kind="policy")
    assert (policy.config["stage"], policy.config["samples_per_prompt"]) == ("grpo", 3)


def test_settings_refuse_an_unknown_policy_step():
    with pytest.raises(InvalidInput, match="policy_step must be one of dpo, ppo, rloo, grpo, not 'reinforce'"):
        RoundSettings.from_dict({"policy_step": "reinforce"})
    assert RoundSettings.from_dict({"policy_step": "rloo"}).policy_step == "rloo"
    assert RoundSettings().policy_step == "dpo"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"policy_step": "ppo", "policy_data": "reward_labelled"}, "policy_data must be human"),
        ({"policy_step": "grpo", "lora_rank": 8}, "lora_rank must be 0"),
        ({"online_samples_per_prompt": 1}, "online_samples_per_prompt must be at least 2"),
        ({"online_steps": 0}, "online_steps must be at least 1"),
        ({"ppo_epochs": 21}, "ppo_epochs must be at least 1 and at most 20"),
    ],
)
def test_settings_refuse_what_an_online_step_cannot_honour(values, message):
    with pytest.raises(InvalidInput, match=message):
        RoundSettings.from_dict(values)
