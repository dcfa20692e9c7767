"""Training rounds: the RLHF loop's steps 1-4 as persisted states, each run by one Celery task.

A round moves pending -> generating -> collecting -> training_reward -> training_policy ->
evaluating -> completed (or failed / cancelled). Every step task first claims the round with a
conditional update, so a duplicated or redelivered message finds it claimed and does nothing. The
step's slow work (sampling, training) runs outside any transaction; what it produced is written in
one transaction together with the move to the next status, and only if the round is still in the
claimed step (an admin may have cancelled it meanwhile). A step that raises marks the round failed,
keeps the error for the dashboard, and remembers the step so a retry resumes there.

A worker can also die without raising (SIGKILL, out of memory, a lost machine). While a step runs,
a heartbeat thread refreshes `step_claimed`; `round_recover_stalled` fails a round whose heartbeat
is older than ROUND_STALL_SECONDS, so the dashboard shows what happened and a retry can resume.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from preference_app.core.model_store import serving_model
from preference_app.core.models import (
    Candidate,
    Comparison,
    Judgment,
    ModelVersion,
    TrainingRound,
)
from preference_app.core.selectors import messages_before, model_version_serving
from preference_app.core.services import (
    InvalidInput,
    conversation_start_from_prompt,
    generation_batch_record,
    generation_batch_run,
    model_version_base_ensure,
    pair_at_random,
    task_enqueue_on_commit,
)
from preference_app.rounds import selectors, verdicts
from preference_app.rounds.evaluation import (
    guard_refusal,
    measure_on_evaluation_set,
    model_warnings,
    verdict_comparisons_create,
)
from preference_app.rounds.evaluation_sets import evaluation_set_active_ensure
from preference_app.rounds.policy_step import (
    checkpoint_dir,
    label_on_policy_replies,
    progress_reporter,
    train_dpo_step,
    train_sft_step,
)
from preference_app.rounds.round_settings import RoundSettings
from training.generate import GenerationConfig, generate_replies
from training.reward import RewardConfig, score_replies, train_reward_model

logger = logging.getLogger(__name__)

Status = TrainingRound.Status
FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
STEP_TEXT_AFTER = {
    Status.COMPLETED: "Done",
    Status.COLLECTING: "Waiting for judgments",
    Status.AWAITING_VERDICT: "Waiting for people to judge the blind head-to-heads",
}
# The status each step task works in, and the status the round moves to when it succeeds.
NEXT_STATUS = {
    Status.GENERATING: Status.COLLECTING,
    Status.TRAINING_REWARD: Status.TRAINING_POLICY,
    Status.TRAINING_POLICY: Status.EVALUATING,
    Status.EVALUATING: Status.AWAITING_VERDICT,
}
Finish = Callable[[TrainingRound], None]


def round_start(*, settings_values: dict, started_by=None) -> TrainingRound:
    """Create the next round with validated settings and queue its generation step."""
    round_settings = RoundSettings.from_dict(settings_values)
    # A round whose worker died would otherwise count as running forever and block every new one.
    round_recover_stalled()
    with transaction.atomic():
        if TrainingRound.objects.select_for_update().exclude(status__in=FINISHED).exists():
            raise InvalidInput("A round is already running; cancel it or wait for it to finish.")
        number = (TrainingRound.objects.aggregate(last=Max("number"))["last"] or 0) + 1
        evaluation_set = evaluation_set_active_ensure()
        training_round = TrainingRound.objects.create(
            number=number, config=round_settings.to_dict(), started_by=started_by, step="Queued",
            evaluation_set=evaluation_set,
            metrics={"evaluation_set": {"version": evaluation_set.version, "sha256": evaluation_set.content_sha256,
                                        "prompts": min(len(evaluation_set.prompts), round_settings.evaluation_prompts)}},
        )
        _enqueue_step(training_round.pk, Status.GENERATING)
    return training_round


def _enqueue_step(round_id: int, status: str) -> None:
    """Queue the task of a step once the transaction that moved the round there commits."""
    from preference_app.rounds import tasks

    task = {
        Status.GENERATING: tasks.round_generate,
        Status.TRAINING_REWARD: tasks.train_round_reward,
        Status.TRAINING_POLICY: tasks.train_round_policy,
        Status.EVALUATING: tasks.train_round_evaluate,
    }[status]
    task_enqueue_on_commit(task, round_id, unavailable=lambda error: _round_unqueued(round_id, status, error))


def _round_unqueued(round_id: int, status: str, error: Exception) -> None:
    """Fail a round whose next step could not be queued, so an admin sees why and can retry it."""
    TrainingRound.objects.filter(pk=round_id, status__in=(status, Status.PENDING), step_claimed__isnull=True).update(
        status=Status.FAILED,
        failed_status=status,
        error=f"The step could not be queued because the task broker was unreachable ({error}). Retry once it is back.",
        finished=timezone.now(),
    )


def _claim_step(round_id: int, status: str) -> bool:
    """Mark the step as taken by this worker; False when another delivery already took it.

    A claim whose heartbeat is older than ROUND_STALL_SECONDS belongs to a worker that died, so it
    may be taken over.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.ROUND_STALL_SECONDS)
    claimable = Q(status=status) & (Q(step_claimed__isnull=True) | Q(step_claimed__lt=stale))
    if status == Status.GENERATING:
        claimable |= Q(status=Status.PENDING)
    return bool(
        TrainingRound.objects.filter(claimable, pk=round_id).update(
            status=status, step_claimed=now, started=now, progress=0.0, step="Starting"
        )
    )


class _Heartbeat:
    """Refresh the step's claim every ROUND_HEARTBEAT_SECONDS while the step's work runs.

    A thread rather than the training progress callback, because model loading, sampling and
    checkpoint saving report no progress yet can take minutes. The thread dies with its process, so
    a killed worker's claim stops being refreshed and `round_recover_stalled` can tell it is gone.
    """

    def __init__(self, round_id: int, status: str):
        self.round_id, self.status = round_id, status
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"round-{round_id}-heartbeat", daemon=True)

    def _beat(self) -> None:
        try:
            while not self.stopped.wait(settings.ROUND_HEARTBEAT_SECONDS):
                TrainingRound.objects.filter(
                    pk=self.round_id, status=self.status, step_claimed__isnull=False
                ).update(step_claimed=timezone.now())
        finally:
            # The thread opened its own database connection; leaving it open would leak one per step.
            connection.close()

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()


def _run_step(round_id: int, status: str, work: Callable[[TrainingRound], Finish]) -> bool:
    """Claim the step, do its work, then record its results and advance, all or nothing."""
    if not _claim_step(round_id, status):
        logger.info("Round %s step %s is already taken or over; skipping this delivery.", round_id, status)
        return False
    training_round = TrainingRound.objects.get(pk=round_id)
    try:
        with _Heartbeat(round_id, status):
            finish = work(training_round)
        with transaction.atomic():
            locked = TrainingRound.objects.select_for_update().get(pk=round_id)
            if locked.status != status:
                logger.info("Round %s left %s while it ran (now %s); results discarded.", round_id, status, locked.status)
                return False
            finish(locked)
            # A step's results may finish the round by themselves (a policy the guard refused).
            if locked.status == status:
                locked.status = NEXT_STATUS[status]
                locked.step = STEP_TEXT_AFTER.get(locked.status, "Queued")
            locked.step_claimed = None
            locked.progress = 0.0
            locked.save()
            if locked.status in (Status.TRAINING_POLICY, Status.EVALUATING):
                _enqueue_step(round_id, locked.status)
    except Exception as error:
        TrainingRound.objects.filter(pk=round_id, status=status).update(
            status=Status.FAILED,
            failed_status=status,
            step_claimed=None,
            error=f"{type(error).__name__}: {error}\n\n{traceback.format_exc(limit=8)}",
            finished=timezone.now(),
        )
        raise
    return True


def round_settings_of(training_round: TrainingRound) -> RoundSettings:
    return RoundSettings.from_dict(training_round.config)


def round_generate(*, round_id: int) -> bool:
    """Step 1: the serving policy writes K candidates per prompt, paired into comparisons."""

    def work(training_round: TrainingRound) -> Finish:
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
                sampling=sampling,
                overlap_target=round_settings.overlap_target,
                training_round=training_round,
            )
        TrainingRound.objects.filter(pk=training_round.pk).update(step=f"Sampling {len(prompts)} prompts x {sampling.candidates_per_context}")
        generation_batch_run(batch_id=batch.pk, pairing=_pairing_for(round_settings, sampling.seed))
        if round_settings.head_to_head and serving.parent_id and serving.parent.kind == ModelVersion.Kind.POLICY:
            _head_to_head(training_round, serving, conversations, round_settings)

        def finish(locked: TrainingRound) -> None:
            locked.metrics = {**locked.metrics, "comparisons": Comparison.objects.filter(training_round=locked).count()}

        return finish

    return _run_step(round_id, Status.GENERATING, work)


def _pairing_for(round_settings: RoundSettings, seed: int):
    """Random disjoint pairs, or the serving reward model's best reply against its worst."""
    reward_version = model_version_serving(kind=ModelVersion.Kind.REWARD)
    if round_settings.pairing != "best_vs_worst" or reward_version is None:
        return pair_at_random(seed)
    from training.checkpoints import load_reward_model

    scorer = load_reward_model(reward_version.path)

    def best_against_worst(replies, context):
        scores = score_replies(scorer.model, scorer.tokenizer, [context] * len(replies), [r.text for r in replies],
                               max_length=round_settings.max_length)
        order = scores.argsort(descending=True).tolist()
        return [(order[0], order[-1])]

    return best_against_worst


def _head_to_head(training_round, serving: ModelVersion, conversations, round_settings: RoundSettings) -> None:
    """Pair a reply of the previous policy against one of the serving policy, for the leaderboard."""
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
            older = Candidate.objects.create(
                conversation=conversation, context_length=1, text=reply.text, model_version=previous,
                sampling=sampling.to_dict(), token_count=reply.token_count,
                finished_with_eos=reply.finished_with_eos, generation_seconds=reply.seconds,
            )
            Comparison.objects.create(
                conversation=conversation, context_length=1, candidate_a=current, candidate_b=older,
                training_round=training_round, source=Comparison.Source.GENERATED,
                overlap_target=round_settings.overlap_target,
            )


def round_training_begin(*, round_id: int) -> bool:
    """Leave collecting for training (the judgment target was met, or an admin moved it on)."""
    with transaction.atomic():
        moved = TrainingRound.objects.filter(pk=round_id, status=Status.COLLECTING).update(
            status=Status.TRAINING_REWARD, step="Queued", step_claimed=None, progress=0.0
        )
        if moved:
            _enqueue_step(round_id, Status.TRAINING_REWARD)
    return bool(moved)


def judgment_recorded(*, comparison: Comparison) -> TrainingRound | None:
    """React to a new judgment: move a collecting round on once its target is met, or start the
    next round once enough judgments have arrived since the last one completed (step 4)."""
    if comparison.training_round_id is not None:
        if comparison.source == Comparison.Source.VERDICT:
            round_verdict_check(round_id=comparison.training_round_id)
        else:
            round_collection_check(round_id=comparison.training_round_id)
    return round_auto_start_check()


def round_auto_start_check() -> TrainingRound | None:
    """Start the next round with the last round's settings when its `auto_start_after_judgments`
    new judgments have arrived since it completed; None when that is off or not yet the case."""
    last = TrainingRound.objects.order_by("-number").first()
    if last is None or last.status != Status.COMPLETED or last.finished is None:
        return None
    threshold = round_settings_of(last).auto_start_after_judgments
    if threshold < 1 or Judgment.objects.filter(created__gt=last.finished).count() < threshold:
        return None
    try:
        return round_start(settings_values=last.config, started_by=last.started_by)
    except (InvalidInput, IntegrityError):
        # Another request's judgment started it a moment earlier.
        return None


def round_collection_check(*, round_id: int) -> bool:
    """Start training once the collecting round has its target number of judgments."""
    training_round = TrainingRound.objects.filter(pk=round_id, status=Status.COLLECTING).first()
    if training_round is None:
        return False
    if selectors.round_judgment_count(training_round=training_round) < round_settings_of(training_round).judgment_target:
        return False
    return round_training_begin(round_id=round_id)


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
        round_settings = round_settings_of(training_round)
        serving = model_version_serving() or model_version_base_ensure()
        train_pairs, held_out_pairs = selectors.preference_pairs(held_out_split=True)
        if not train_pairs:
            raise InvalidInput("No usable judgments to train a reward model on (ties and both-bad are left out).")
        config = RewardConfig(
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
                "reward_held_out_pairs": len(held_out_pairs),
                "reward_held_out_accuracy": result.metrics.get("eval_accuracy"),
                "reward_train_accuracy": result.metrics.get("train_accuracy"),
                "reward_epoch_accuracies": result.metrics.get("epoch_eval_accuracies"),
            }

        return finish

    return _run_step(round_id, Status.TRAINING_REWARD, work)


def round_train_policy(*, round_id: int) -> bool:
    """Step 3 (step 0 first when there are demonstrations): SFT, then DPO, on the data the round's
    `policy_data` names: people's pairs (`human`); those plus the round's reward model's best-vs-worst
    pairs of fresh on-policy replies (`reward_labelled`); or, with no DPO, SFT on the reward model's
    best of n replies (`best_of_n`)."""

    def work(training_round: TrainingRound) -> Finish:
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
        trained = train_dpo_step(training_round, serving, sft, pairs, round_settings)
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
            if trained.sft is not None and trained.dpo is not None:
                parent = _register_version(locked, kind=ModelVersion.Kind.SFT, path=trained.sft.checkpoint,
                                           parent=serving, metrics=trained.sft.metrics, config=trained.sft_config)
            policy = trained.dpo or trained.sft
            _register_version(locked, kind=ModelVersion.Kind.POLICY, path=policy.checkpoint, parent=serving,
                              metrics={**policy.metrics, "started_from": parent.name}, config=trained.policy_config)
            locked.metrics = {**locked.metrics, **data}
            if trained.dpo is not None:
                locked.metrics.update({
                    "dpo_epochs": trained.policy_config["epochs"],
                    "dpo_reward_accuracy": trained.dpo.metrics.get("train_reward_accuracy"),
                    "dpo_reward_margin": trained.dpo.metrics.get("train_reward_margin_mean"),
                    "dpo_loss": trained.dpo.metrics.get("train_loss_mean"),
                })

        return finish

    return _run_step(round_id, Status.TRAINING_POLICY, work)


def round_evaluate(*, round_id: int) -> bool:
    """Put the new policy before people: blind head-to-heads against the serving policy on the
    frozen evaluation prompts, plus what the models can tell at once (KL, length, the reward
    model's opinion). The round then waits for the people's verdict (`round_verdict_check`)."""

    def work(training_round: TrainingRound) -> Finish:
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
                _verdict_give(locked, promote=False, decided_by="guard")

        return finish

    return _run_step(round_id, Status.EVALUATING, work)


def round_verdict_check(*, round_id: int) -> bool:
    """Record the people's verdict so far; promote or keep the serving policy once it is due.

    Called after each judgment of a head-to-head. True when this call gave the verdict.
    """
    with transaction.atomic():
        locked = TrainingRound.objects.select_for_update().filter(pk=round_id, status=Status.AWAITING_VERDICT).first()
        if locked is None:
            return False
        round_settings = round_settings_of(locked)
        tally = selectors.verdict_tally(training_round=locked)
        result = verdicts.estimate(tally, confidence=round_settings.verdict_confidence)
        locked.metrics = {**locked.metrics, **_human_metrics(locked, result, round_settings)}
        due = verdicts.verdict_due(tally, judgments_wanted=round_settings.verdict_judgments)
        if not due:
            locked.step = f"Waiting for people: {result.judgments} of {round_settings.verdict_judgments} head-to-head judgments"
            locked.save(update_fields=["metrics", "step"])
            return False
        _verdict_give(locked, promote=verdicts.promotes(result, promote_above=round_settings.promote_above),
                      decided_by="people")
    return True


def round_verdict_decide(*, round_id: int, promote: bool) -> bool:
    """An admin's verdict, given by hand whatever the people's judgments say so far."""
    with transaction.atomic():
        locked = TrainingRound.objects.select_for_update().filter(pk=round_id, status=Status.AWAITING_VERDICT).first()
        if locked is None:
            return False
        round_settings = round_settings_of(locked)
        result = verdicts.estimate(selectors.verdict_tally(training_round=locked),
                                   confidence=round_settings.verdict_confidence)
        locked.metrics = {**locked.metrics, **_human_metrics(locked, result, round_settings)}
        _verdict_give(locked, promote=promote, decided_by="admin")
    return True


def _human_metrics(training_round: TrainingRound, result: verdicts.Estimate, round_settings: RoundSettings) -> dict:
    metrics = {
        "human_judgments": result.judgments,
        "human_win_rate": result.p_new_beats_serving,
        "human_win_rate_low": result.low,
        "human_win_rate_high": result.high,
        "human_confidence": result.confidence,
        "reward_accuracy_on_new_replies": result.reward_model_accuracy,
    }
    held_out = training_round.metrics.get("reward_held_out_accuracy")
    warnings = [w for w in training_round.metrics.get("warnings", []) if not w.startswith("Reward-model accuracy")]
    if held_out is not None and result.reward_model_accuracy is not None:
        gap = held_out - result.reward_model_accuracy
        metrics["reward_accuracy_gap"] = gap
        if gap > round_settings.warn_accuracy_drop:
            warnings.append(
                f"Reward-model accuracy on the new policy's replies is {result.reward_model_accuracy:.2f}, "
                f"{gap:.2f} below its held-out {held_out:.2f}: the policy may be pleasing the model, not people."
            )
    metrics["warnings"] = warnings
    return metrics


def _verdict_give(locked: TrainingRound, *, promote: bool, decided_by: str) -> None:
    """Promote (or not), complete the round, and take its unjudged head-to-heads out of the queue."""
    new_policy = ModelVersion.objects.get(training_round=locked, kind=ModelVersion.Kind.POLICY)
    if promote:
        model_version_promote(version=new_policy)
    Comparison.objects.filter(training_round=locked, source=Comparison.Source.VERDICT,
                              judgment_count__lt=F("overlap_target")).update(overlap_target=F("judgment_count"))
    locked.metrics = {**locked.metrics, "promoted": promote, "verdict_by": decided_by}
    locked.status = Status.COMPLETED
    locked.finished = timezone.now()
    deciders = {"people": "people", "admin": "an admin", "guard": "the KL and length guard"}
    locked.step = f"Done: {'promoted' if promote else 'not promoted'} by {deciders[decided_by]}"
    locked.save()
    round_id = locked.pk
    transaction.on_commit(lambda: round_continue_loop(round_id=round_id))


def round_cancel(*, round_id: int) -> bool:
    """Stop a round; a step still running finds it cancelled and discards its results."""
    return bool(
        TrainingRound.objects.filter(pk=round_id).exclude(status__in=FINISHED).update(
            status=Status.CANCELLED, step="Cancelled", step_claimed=None, finished=timezone.now()
        )
    )


WORKING = (Status.GENERATING, Status.TRAINING_REWARD, Status.TRAINING_POLICY, Status.EVALUATING)


def round_recover_stalled(*, now=None) -> list[int]:
    """Fail every round whose running step has had no heartbeat for ROUND_STALL_SECONDS.

    Such a step's worker was killed or lost without raising, so nothing else would ever move the
    round on. Each round is failed with a conditional update on the claim time it was seen with: a
    heartbeat that arrives in between wins, and the round is left running. Returns the failed ids.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.ROUND_STALL_SECONDS)
    failed = []
    stalled = TrainingRound.objects.filter(status__in=WORKING, step_claimed__lt=stale_before)
    for round_id, status, claimed in stalled.values_list("pk", "status", "step_claimed"):
        error = (
            f"The worker running this step stopped responding: its last heartbeat was at "
            f"{claimed:%Y-%m-%d %H:%M:%S} UTC, more than {settings.ROUND_STALL_SECONDS} s before "
            f"{now:%H:%M:%S}. It was probably killed or ran out of memory; nothing it produced was "
            f"registered. Retry to run the step again."
        )
        if TrainingRound.objects.filter(pk=round_id, status=status, step_claimed=claimed).update(
            status=Status.FAILED, failed_status=status, step_claimed=None, error=error, finished=now
        ):
            logger.warning("Round %s failed: no heartbeat from its %s step since %s.", round_id, status, claimed)
            failed.append(round_id)
    return failed


def round_retry(*, round_id: int) -> bool:
    """Resume a failed round at the step that failed."""
    with transaction.atomic():
        training_round = TrainingRound.objects.select_for_update().filter(pk=round_id, status=Status.FAILED).first()
        if training_round is None or not training_round.failed_status:
            return False
        resume = training_round.failed_status
        TrainingRound.objects.filter(pk=round_id).update(
            status=resume, failed_status="", step_claimed=None, error="", finished=None, step="Queued (retry)"
        )
        _enqueue_step(round_id, resume)
    return True


def model_version_promote(*, version: ModelVersion) -> ModelVersion:
    """Make `version` the serving model of its kind (promotion, or a roll-back to an older one)."""
    with transaction.atomic():
        ModelVersion.objects.select_for_update().filter(kind=version.kind, is_serving=True).exclude(pk=version.pk).update(
            is_serving=False
        )
        ModelVersion.objects.filter(pk=version.pk).update(is_serving=True)
    version.refresh_from_db()
    return version


def round_continue_loop(*, round_id: int) -> TrainingRound | None:
    """Step 4: start the next round automatically while the auto-loop has rounds left and people
    judged the last new policy better than the one it replaced, beyond their interval."""
    training_round = TrainingRound.objects.get(pk=round_id)
    round_settings = round_settings_of(training_round)
    if training_round.status != Status.COMPLETED or round_settings.auto_rounds < 1:
        return None
    low = training_round.metrics.get("human_win_rate_low")
    by_people = training_round.metrics.get("verdict_by") == "people" and training_round.metrics.get("promoted")
    gain = None if low is None else low - 0.5
    if not by_people or gain is None or gain < round_settings.min_win_rate_gain:
        shown = "none measured" if gain is None else f"{gain:+.3f}"
        TrainingRound.objects.filter(pk=round_id).update(
            step=f"{training_round.step}; auto-loop stopped (people's verdict: lower bound minus 0.5 is {shown})"
        )
        return None
    follow_up = {**round_settings.to_dict(), "auto_rounds": round_settings.auto_rounds - 1}
    return round_start(settings_values=follow_up, started_by=training_round.started_by)
