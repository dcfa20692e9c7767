"""The work of a round's steps: generating candidates (step 1), training the reward model (step 2)
and the policy (step 3), and evaluating the new policy before people.

Each runs under step_runner.step_run, which claims the round, keeps its heartbeat and records what
the step's `finish` writes together with the move to the next status.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from preference_app.core.comparisons import candidate_create_from_reply, comparison_create
from preference_app.core.errors import InvalidInput
from preference_app.core.generation import (
    generation_batch_record,
    generation_batch_run,
    model_version_base_ensure,
    pair_at_random,
)
from preference_app.core.models import Candidate, Comparison, ModelVersion, TrainingRound
from preference_app.core.prompts import conversation_start_from_prompt
from preference_app.core.selectors import messages_before, model_version_serving
from preference_app.rounds import selectors
from preference_app.rounds.evaluation_sets import evaluation_set_active_ensure
from preference_app.rounds.round_settings import RoundSettings, reward_method_for
from preference_app.rounds.selectors import round_settings_of
from preference_app.rounds.services import model_version_promote, round_verdict_give
from preference_app.rounds.step_runner import Finish, step_run

# The steps' machine-learning code (policy_step, evaluation, model_store, training) loads torch, so
# each step imports it where it runs: the web tier loads this module through tasks.py whenever it
# queues a step, and it never loads torch (tests/test_layering.py checks it).

Status = TrainingRound.Status


def round_generate(*, round_id: int) -> bool:
    """Step 1: the serving policy writes K candidates per prompt, paired into comparisons."""

    def work(training_round: TrainingRound) -> Finish:
        from preference_app.rounds.policy_step import generation_reporter
        from training.generate import GenerationConfig

        round_settings = round_settings_of(training_round)
        serving = model_version_serving() or model_version_base_ensure()
        prompts = selectors.prompts_for_generation(limit=round_settings.prompts_per_round)
        if not prompts:
            raise InvalidInput("There are no prompts to generate from; load or import some first.")
        sampling = GenerationConfig(
            candidates_per_context=round_settings.candidates_per_prompt,
            max_new_tokens=round_settings.max_new_tokens,
            temperature=round_settings.temperature,
            seed=round_settings.seed + training_round.number,
        )
        with transaction.atomic():
            conversations = [conversation_start_from_prompt(prompt=prompt) for prompt in prompts]
            batch = generation_batch_record(
                model_version=serving,
                conversations=conversations,
                sampling=sampling.to_dict(),
                overlap_target=round_settings.overlap_target,
                training_round=training_round,
            )
        label = f"Sampling {len(prompts)} prompts x {sampling.candidates_per_context}"
        TrainingRound.objects.filter(pk=training_round.pk).update(step=label, progress=0.0)
        generation_batch_run(batch_id=batch.pk, pairing=_pairing_for(round_settings, sampling.seed),
                             on_fraction=generation_reporter(training_round.pk, label, len(prompts)))
        if round_settings.head_to_head and serving.parent_id and serving.parent.kind == ModelVersion.Kind.POLICY:
            _head_to_head(training_round, serving, conversations, round_settings)

        def finish(locked: TrainingRound) -> None:
            locked.metrics = {**locked.metrics, "comparisons": Comparison.objects.filter(training_round=locked).count()}

        return finish

    return step_run(round_id, Status.GENERATING, work)


def _pairing_for(round_settings: RoundSettings, seed: int):
    """Random disjoint pairs, or the serving reward model's best reply against its worst."""
    reward_version = model_version_serving(kind=ModelVersion.Kind.REWARD)
    if round_settings.pairing != "best_vs_worst" or reward_version is None:
        return pair_at_random(seed)
    from training.checkpoints import load_reward_model
    from training.reward import score_replies

    scorer = load_reward_model(reward_version.path)

    def best_against_worst(replies, context):
        scores = score_replies(scorer.model, scorer.tokenizer, [context] * len(replies), [r.text for r in replies],
                               max_length=round_settings.max_length)
        order = scores.argsort(descending=True).tolist()
        return [(order[0], order[-1])]

    return best_against_worst


def _head_to_head(training_round, serving: ModelVersion, conversations, round_settings: RoundSettings) -> None:
    """Pair a reply of the previous policy against one of the serving policy, for the leaderboard."""
    from preference_app.core.model_store import serving_model
    from training.generate import GenerationConfig, generate_replies

    previous = serving.parent
    loaded = serving_model(previous.path)
    contexts = [messages_before(conversation.turns.order_by("index"), 1) for conversation in conversations]
    sampling = GenerationConfig(candidates_per_context=1, max_new_tokens=round_settings.max_new_tokens,
                                temperature=round_settings.temperature, seed=round_settings.seed + 7919)
    replies = generate_replies(loaded.model, loaded.tokenizer, contexts, sampling)
    with transaction.atomic():
        for conversation, (reply,) in zip(conversations, replies):
            current = Candidate.objects.filter(conversation=conversation, model_version=serving).order_by("id").first()
            if current is None:
                continue
            older = candidate_create_from_reply(
                conversation=conversation, context_length=1, reply=reply, model_version=previous,
                sampling=sampling.to_dict(),
            )
            comparison_create(current, older, source=Comparison.Source.GENERATED, training_round=training_round,
                              overlap_target=round_settings.overlap_target)


def _register_version(training_round, *, kind: str, path: Path, parent: ModelVersion, metrics: dict, config: dict) -> ModelVersion:
    version, _ = ModelVersion.objects.get_or_create(
        training_round=training_round,
        kind=kind,
        defaults={
            "name": f"round-{training_round.number}-{kind}",
            "path": str(path),
            "parent": parent,
            "base_model_id": parent.base_model_id,
            "metrics": metrics,
            "config": config,
        },
    )
    return version


def round_train_reward(*, round_id: int) -> bool:
    """Step 2: a reward model on all judgments so far, initialised from the serving policy."""

    def work(training_round: TrainingRound) -> Finish:
        from preference_app.rounds.policy_step import checkpoint_dir, progress_reporter
        from training.reward import RewardConfig, train_reward_model

        round_settings = round_settings_of(training_round)
        serving = model_version_serving() or model_version_base_ensure()
        train_pairs, held_out_pairs = selectors.preference_pairs(held_out_split=True)
        if not train_pairs:
            raise InvalidInput("No usable judgments to train a reward model on (ties and both-bad are left out).")
        config = RewardConfig(
            method=reward_method_for(round_settings, len(train_pairs)),
            learning_rate=round_settings.reward_learning_rate, epochs=round_settings.reward_epochs,
            batch_size=round_settings.batch_size, max_length=round_settings.max_length,
            use_margin=round_settings.reward_use_margin, seed=round_settings.seed,
            device=settings.TRAINING_DEVICE or None, early_stopping=True,
        )
        out_dir = checkpoint_dir(training_round, ModelVersion.Kind.REWARD)
        result = train_reward_model(
            model_path=serving.path, train_pairs=train_pairs, eval_pairs=held_out_pairs or None, config=config,
            out_dir=out_dir, progress=progress_reporter(training_round.pk, "Reward model"),
        )

        def finish(locked: TrainingRound) -> None:
            _register_version(locked, kind=ModelVersion.Kind.REWARD, path=result.checkpoint, parent=serving,
                              metrics=result.metrics, config=config.to_dict())
            locked.metrics = {
                **locked.metrics,
                "reward_pairs": len(train_pairs),
                "reward_method": config.method,
                "reward_held_out_pairs": len(held_out_pairs),
                "reward_held_out_accuracy": result.metrics.get("eval_accuracy"),
                "reward_train_accuracy": result.metrics.get("train_accuracy"),
                "reward_epoch_accuracies": result.metrics.get("epoch_eval_accuracies"),
            }

        return finish

    return step_run(round_id, Status.TRAINING_REWARD, work)


def round_train_policy(*, round_id: int) -> bool:
    """Step 3 (step 0 first when there are demonstrations): SFT, then DPO, on the data the round's
    `policy_data` names: people's pairs (`human`); those plus the round's reward model's best-vs-worst
    pairs of fresh on-policy replies (`reward_labelled`); or, with no DPO, SFT on the reward model's
    best of n replies (`best_of_n`). With an online `policy_step` (ppo, rloo, grpo), SFT is followed
    by that step against the round's reward model instead of DPO."""

    def work(training_round: TrainingRound) -> Finish:
        from preference_app.rounds.policy_step import label_on_policy_replies, train_policy_step, train_sft_step

        round_settings = round_settings_of(training_round)
        serving = model_version_serving() or model_version_base_ensure()
        human_pairs, _ = selectors.preference_pairs(held_out_split=False)
        demonstrations = selectors.demonstrations_for_sft()
        labelled = None
        if round_settings.policy_data == "best_of_n":
            # Rejection sampling: the best of n replies of the policy now serving.
            labelled = label_on_policy_replies(training_round, serving.path, round_settings)
            demonstrations = demonstrations + labelled.demonstrations
        sft = train_sft_step(training_round, serving, demonstrations, round_settings)
        pairs = human_pairs
        if round_settings.policy_data == "reward_labelled":
            # On-policy for the model DPO starts from: the SFT model when the round ran SFT.
            labelled = label_on_policy_replies(training_round, sft.start_path, round_settings)
            pairs = human_pairs + labelled.pairs
        trained = train_policy_step(training_round, serving, sft, pairs, round_settings)
        data = {
            "policy_data": round_settings.policy_data,
            "human_pairs": len(human_pairs),
            "labelled_pairs": len(labelled.pairs) if labelled else 0,
            "labelled_prompts": labelled.prompts if labelled else 0,
            "labelled_dropped_small_gap": labelled.dropped_small_gap if labelled else 0,
            "dpo_pairs": len(pairs) if trained.dpo else 0,
            "sft_demonstrations": len(demonstrations),
        }

        def finish(locked: TrainingRound) -> None:
            parent = serving
            policy = trained.policy
            if trained.sft is not None and policy is not trained.sft:
                parent = _register_version(locked, kind=ModelVersion.Kind.SFT, path=trained.sft.checkpoint,
                                           parent=serving, metrics=trained.sft.metrics, config=trained.sft_config)
            _register_version(locked, kind=ModelVersion.Kind.POLICY, path=policy.checkpoint, parent=serving,
                              metrics={**policy.metrics, "started_from": parent.name}, config=trained.policy_config)
            locked.metrics = {**locked.metrics, **data, **trained.round_metrics}
            if trained.dpo is not None:
                locked.metrics.update({
                    "dpo_epochs": trained.policy_config["epochs"],
                    "dpo_reward_accuracy": trained.dpo.metrics.get("train_reward_accuracy"),
                    "dpo_reward_margin": trained.dpo.metrics.get("train_reward_margin_mean"),
                    "dpo_loss": trained.dpo.metrics.get("train_loss_mean"),
                })

        return finish

    return step_run(round_id, Status.TRAINING_POLICY, work)


def round_evaluate(*, round_id: int) -> bool:
    """Put the new policy before people: blind head-to-heads against the serving policy on the
    frozen evaluation prompts, plus what the models can tell at once (KL, length, the reward
    model's opinion). The round then waits for the people's verdict (`round_verdict_check`)."""

    def work(training_round: TrainingRound) -> Finish:
        from preference_app.rounds.evaluation import (
            guard_refusal,
            measure_on_evaluation_set,
            model_warnings,
            verdict_comparisons_create,
        )

        round_settings = round_settings_of(training_round)
        new_policy = ModelVersion.objects.select_related("parent").get(
            training_round=training_round, kind=ModelVersion.Kind.POLICY
        )
        reward_model = ModelVersion.objects.get(training_round=training_round, kind=ModelVersion.Kind.REWARD)
        evaluation_set = training_round.evaluation_set or evaluation_set_active_ensure()
        texts = evaluation_set.prompts[: round_settings.evaluation_prompts]
        measured = measure_on_evaluation_set(training_round, new_policy, reward_model, texts, round_settings)

        refusal = guard_refusal(measured.metrics, round_settings)

        def finish(locked: TrainingRound) -> None:
            verdict_rewards = {}
            if refusal is None:
                verdict_rewards = verdict_comparisons_create(locked, new_policy, texts, measured, round_settings)
            evaluation = {**measured.metrics, "verdict_comparisons": len(verdict_rewards)}
            evaluation["warnings"] = model_warnings(evaluation, round_settings) + ([refusal] if refusal else [])
            ModelVersion.objects.filter(pk=new_policy.pk).update(metrics={**new_policy.metrics, "evaluation": evaluation})
            locked.evaluation_set = evaluation_set
            locked.metrics = {**locked.metrics, **evaluation, "verdict_rewards": verdict_rewards}
            # The new reward model is trained on every judgment so far, so it serves either way.
            model_version_promote(version=reward_model)
            if refusal is not None:
                round_verdict_give(locked, promote=False, decided_by="guard")

        return finish

    return step_run(round_id, Status.EVALUATING, work)
