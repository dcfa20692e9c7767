"""Training rounds' state machine: starting a round, moving it from collecting to training,
the people's (or an admin's) verdict, cancelling, retrying, promoting a model version, and
starting the next round when the auto-loop (loop.py) says so.

A round moves pending -> generating -> collecting -> training_reward -> training_policy ->
evaluating -> awaiting_verdict -> completed (or failed / cancelled). The steps' work lives in
steps.py; how each step's task is queued, claimed and recovered, in step_runner.py.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from preference_app.core.errors import InvalidInput
from preference_app.core.models import Comparison, ModelVersion, TrainingRound
from preference_app.rounds import loop, selectors, verdicts
from preference_app.rounds.evaluation_sets import evaluation_set_active_ensure
from preference_app.rounds.round_settings import RoundSettings
from preference_app.rounds.selectors import round_settings_of
from preference_app.rounds.step_runner import round_recover_stalled, step_enqueue

Status = TrainingRound.Status
FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


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
        step_enqueue(training_round.pk, Status.GENERATING)
    return training_round


def round_training_begin(*, round_id: int) -> bool:
    """Leave collecting for training (the judgment target was met, or an admin moved it on)."""
    with transaction.atomic():
        moved = TrainingRound.objects.filter(pk=round_id, status=Status.COLLECTING).update(
            status=Status.TRAINING_REWARD, step="Queued", step_claimed=None, progress=0.0
        )
        if moved:
            step_enqueue(round_id, Status.TRAINING_REWARD)
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
    """Start the next round with the last round's settings once the auto-start says it is due
    (loop.auto_start_due); None when that is off or not yet the case."""
    last = loop.auto_start_due()
    if last is None:
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
        round_verdict_give(locked, promote=verdicts.promotes(result, promote_above=round_settings.promote_above),
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
        round_verdict_give(locked, promote=promote, decided_by="admin")
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


def round_verdict_give(locked: TrainingRound, *, promote: bool, decided_by: str) -> None:
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


def round_retry(*, round_id: int) -> bool:
    """Resume a failed round at the step that failed."""
    with transaction.atomic():
        training_round = TrainingRound.objects.select_for_update().filter(pk=round_id, status=Status.FAILED).first()
        if training_round is None or not training_round.failed_status:
            return False
        resume = training_round.failed_status
        TrainingRound.objects.filter(pk=round_id).update(
            status=resume, failed_status="", step_claimed=None, step_claimed_by="", step_attempts=0, error="",
            finished=None, step="Queued (retry)",
        )
        step_enqueue(round_id, resume)
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
    """Step 4: start the auto-loop's next round after a completed one, or say on the dashboard why
    the loop stopped (loop.loop_decision decides which)."""
    training_round = TrainingRound.objects.get(pk=round_id)
    decision = loop.loop_decision(training_round)
    if decision is None:
        return None
    if decision.settings_values is None:
        TrainingRound.objects.filter(pk=round_id).update(
            step=f"{training_round.step}; auto-loop stopped ({decision.stopped_because})"
        )
        return None
    return round_start(settings_values=decision.settings_values, started_by=training_round.started_by)
