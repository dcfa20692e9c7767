"""A round runs through the real Celery tasks: generation, collection, reward model, DPO, evaluation,
and the people's verdict on blind head-to-heads."""

import pytest

from preference_app.core import roles
from preference_app.core.models import Comparison, Demonstration, ModelVersion, TrainingRound
from preference_app.core.prompts import builtin_prompts_load
from preference_app.core.services import judgment_submit
from preference_app.rounds import selectors, services
from preference_app.rounds.tasks import train_round_policy, train_round_reward
from tests.conftest import make_user, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SMALL_ROUND = {
    "prompts_per_round": 6, "candidates_per_prompt": 2, "max_new_tokens": 16, "judgment_target": 6,
    "batch_size": 4, "max_length": 128, "eval_max_new_tokens": 16, "learning_rate": 1e-4,
    "reward_learning_rate": 1e-4, "head_to_head": False, "evaluation_prompts": 6, "verdict_judgments": 6,
}


def round_in(round_id, *statuses):
    training_round = TrainingRound.objects.get(pk=round_id)
    return training_round if training_round.status in statuses else None


def judge_shorter(annotator, comparisons):
    for comparison in comparisons:
        a, b = comparison.candidate_a, comparison.candidate_b
        if a.token_count == b.token_count:
            judgment_submit(annotator=annotator, comparison=comparison, choice="tie", strength=None, left_candidate="a")
        else:
            choice = "a" if a.token_count < b.token_count else "b"
            judgment_submit(annotator=annotator, comparison=comparison, choice=choice, strength=2, left_candidate="b")


def test_a_round_runs_start_to_finish_and_duplicate_deliveries_change_nothing(celery_worker, base_policy):
    builtin_prompts_load()
    annotator = make_user("sim", roles.ANNOTATOR)
    training_round = services.round_start(settings_values=SMALL_ROUND)
    collecting = wait_for(lambda: round_in(training_round.pk, "collecting", "failed"), timeout=120, message="collecting")
    assert collecting.status == "collecting", collecting.error
    comparisons = list(Comparison.objects.filter(training_round=training_round))
    assert len(comparisons) == 6 and collecting.metrics["comparisons"] == 6

    # An annotator-written ideal reply: the policy step runs SFT on it (step 0) before DPO.
    Demonstration.objects.create(conversation=comparisons[0].conversation, context_length=1,
                                 text="Sleep at the same time every night.", author=annotator)
    judge_shorter(annotator, comparisons)
    # The sixth judgment met the target, so the round moved on to training by itself.
    assert TrainingRound.objects.get(pk=training_round.pk).status != "collecting"
    awaiting = wait_for(lambda: round_in(training_round.pk, "awaiting_verdict", "failed"), timeout=300,
                        message="the evaluation")
    assert awaiting.status == "awaiting_verdict", awaiting.error
    for key in ("reward_held_out_accuracy", "dpo_reward_accuracy", "reward_model_win_rate", "kl_k1", "kl_k1_stderr",
                "kl_k3", "kl_k3_stderr", "mean_length_new", "eos_rate_new", "truncated_new", "reward_new"):
        assert key in awaiting.metrics
    assert awaiting.metrics["sft_demonstrations"] == 1
    versions = ModelVersion.objects.filter(training_round=training_round)
    assert sorted(versions.values_list("kind", flat=True)) == ["policy", "reward", "sft"]
    policy, sft = versions.get(kind="policy"), versions.get(kind="sft")
    assert policy.metrics["started_from"] == sft.name
    # DPO's reference followed SFT (reference_follows_sft), and KL was measured against that reference.
    assert policy.config["reference_path"] == sft.path == awaiting.metrics["kl_reference_path"]
    assert ModelVersion.objects.get(kind="reward", is_serving=True).training_round_id == training_round.pk

    # Six blind head-to-heads on the frozen evaluation prompts wait in the ordinary queue.
    head_to_heads = Comparison.objects.filter(training_round=training_round, source="verdict")
    assert head_to_heads.count() == 6
    evaluation_texts = set(awaiting.evaluation_set.prompts[:6])
    assert {comparison.conversation.turns.get().text for comparison in head_to_heads} == evaluation_texts
    judge_shorter(annotator, head_to_heads)
    done = round_in(training_round.pk, "completed")
    assert done is not None and done.metrics["verdict_by"] == "people" and done.metrics["human_judgments"] <= 6
    promoted = ModelVersion.objects.get(kind="policy", is_serving=True) == policy
    assert promoted == done.metrics["promoted"]
    # Each working step recorded its time, from which the start form estimates the next round.
    assert set(done.metrics["step_seconds"]) == {"generating", "training_reward", "training_policy", "evaluating"}
    assert selectors.rounds_timed() == [done]

    replays = [train_round_reward.delay(training_round.pk), train_round_policy.delay(training_round.pk)]
    assert [replay.get(timeout=60) for replay in replays] == [False, False]
    assert ModelVersion.objects.filter(training_round=training_round).count() == 3
    assert TrainingRound.objects.get(pk=training_round.pk).status == "completed"


def test_a_failed_step_keeps_its_error_and_a_retry_resumes_there(celery_worker, base_policy, tmp_path):
    builtin_prompts_load()
    annotator = make_user("sim", roles.ANNOTATOR)
    training_round = services.round_start(settings_values=SMALL_ROUND)
    wait_for(lambda: round_in(training_round.pk, "collecting"), timeout=120, message="collecting")
    real_path = base_policy.path
    ModelVersion.objects.filter(pk=base_policy.pk).update(path=str(tmp_path / "gone"))
    judge_shorter(annotator, Comparison.objects.filter(training_round=training_round))
    failed = wait_for(lambda: round_in(training_round.pk, "failed"), timeout=120, message="the reward step to fail")
    assert failed.failed_status == "training_reward"
    assert "Could not load the model" in failed.error
    assert not ModelVersion.objects.filter(training_round=training_round).exists()

    ModelVersion.objects.filter(pk=base_policy.pk).update(path=real_path)
    assert services.round_retry(round_id=training_round.pk)
    done = wait_for(lambda: round_in(training_round.pk, "awaiting_verdict", "failed"), timeout=300,
                    message="the evaluation")
    assert done.status == "awaiting_verdict", done.error
    assert done.error == ""


def test_only_one_round_runs_at_a_time(db, base_policy):
    services.round_start(settings_values=SMALL_ROUND)
    with pytest.raises(services.InvalidInput, match="already running"):
        services.round_start(settings_values=SMALL_ROUND)
    assert TrainingRound.objects.count() == 1

