"""Candidate generation: the base model version and generation batches (record, queue, claim, run, recover)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from preference_app.core import claims
from preference_app.core.comparisons import candidate_create_from_reply, comparison_create
from preference_app.core.errors import InvalidInput
from preference_app.core.models import Comparison, Conversation, GenerationBatch, ModelVersion, Prompt
from preference_app.core.prompts import conversation_start_from_prompt
from preference_app.core.selectors import messages_before
from preference_app.core.task_queue import task_enqueue_on_commit

if TYPE_CHECKING:
    from training.generate import GeneratedReply

logger = logging.getLogger(__name__)

# Live chat turns have a queue and a worker of their own (Procfile, docker-compose.yml), so a person
# waiting for two replies never waits behind a round's batch, an export or training.
CHAT_QUEUE = "chat"
# While a live chat's replies grow, their text is written this often (the chat page polls at about
# the same pace); other batches only report the share of their tokens written, once a second.
STREAM_INTERVAL_SECONDS = 0.25
PROGRESS_INTERVAL_SECONDS = 1.0


def model_version_base_ensure() -> ModelVersion:
    """Register the base policy (MODEL_NAME) as a model version, serving if nothing else serves.

    Safe to call repeatedly: the base version is looked up by name.
    """
    # Imported here: model_store loads torch, which the web tier never needs (workers register the base).
    from preference_app.core.model_store import base_model_location

    location = base_model_location()
    name = f"base:{settings.MODEL_NAME}"
    with transaction.atomic():
        version, _ = ModelVersion.objects.get_or_create(
            name=name,
            defaults={"kind": ModelVersion.Kind.POLICY, "path": location, "base_model_id": settings.MODEL_NAME},
        )
        if not ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, is_serving=True).exists():
            ModelVersion.objects.filter(pk=version.pk).update(is_serving=True)
            version.is_serving = True
    return version


def generation_batch_record(
    *,
    model_version: ModelVersion,
    conversations: list[Conversation],
    sampling: Mapping[str, Any],
    overlap_target: int = 1,
    training_round=None,
) -> GenerationBatch:
    """Record a generation request without queueing it (a round's task runs it itself).

    `sampling` holds fields of training.generate.GenerationConfig, `candidates_per_context` among
    them; the rest take GenerationConfig's defaults. A plain mapping rather than the dataclass, so
    that the web tier can ask for replies without importing torch.
    """
    if not conversations:
        raise InvalidInput("A generation batch needs at least one conversation.")
    if sampling.get("candidates_per_context", 0) < 2:
        raise InvalidInput("At least two candidates per context are needed to form a comparison.")
    with transaction.atomic():
        batch = GenerationBatch.objects.create(
            model_version=model_version,
            training_round=training_round,
            sampling=dict(sampling),
            overlap_target=overlap_target,
        )
        batch.conversations.set(conversations)
    return batch


GENERATION_UNAVAILABLE = (
    "Reply generation is unavailable right now: the task queue could not be reached. Your message is "
    "saved; try again in a minute, and tell an admin if this persists."
)


def generation_batch_create(
    *,
    model_version: ModelVersion,
    conversations: list[Conversation],
    sampling: Mapping[str, Any],
    overlap_target: int = 1,
    training_round=None,
) -> GenerationBatch:
    """Record a generation request and queue it once the surrounding transaction commits."""
    with transaction.atomic():
        batch = generation_batch_record(
            model_version=model_version,
            conversations=conversations,
            sampling=sampling,
            overlap_target=overlap_target,
            training_round=training_round,
        )
        GenerationBatch.objects.filter(pk=batch.pk).update(enqueued=timezone.now())
        _generation_batch_enqueue(batch.pk)
    return batch


def _generation_batch_enqueue(batch_id: int) -> None:
    """Queue the batch's task once the transaction commits: on the chat queue for a live chat turn."""
    from preference_app.core.tasks import generate_candidates

    chat = GenerationBatch.objects.filter(pk=batch_id, conversations__source=Conversation.Source.LIVE_CHAT).exists()
    task_enqueue_on_commit(generate_candidates, batch_id, queue=CHAT_QUEUE if chat else None,
                           unavailable=lambda error: generation_batch_unqueued(batch_id=batch_id))


def generation_batch_unqueued(*, batch_id: int) -> None:
    """Fail a batch whose task could not be queued, with a message the annotator can act on.

    Failing it (rather than leaving it pending) puts the chat in its failed phase, whose retry button
    requests a new batch once the broker is back; no worker can have taken it, as it never reached one.
    """
    GenerationBatch.objects.filter(pk=batch_id, status=GenerationBatch.Status.PENDING).update(
        status=GenerationBatch.Status.FAILED, error=GENERATION_UNAVAILABLE, finished=timezone.now()
    )


def _claim_generation_batch(batch_id: int, holder: str) -> bool:
    """Move a batch from pending to running for `holder`; True only for the one caller that did so.

    A running batch may be taken over when its claim is dead (core.claims): its heartbeat stopped,
    or its holder's process on this machine is gone, as when a redelivered message finds the pool
    child that ran it killed. A batch claimed MAX_ATTEMPTS times is failed instead, since whatever
    kills its worker would kill the next one too.
    """
    now = timezone.now()
    seen = GenerationBatch.objects.filter(
        pk=batch_id, status__in=(GenerationBatch.Status.PENDING, GenerationBatch.Status.RUNNING)
    ).values("status", "claimed", "claimed_by", "attempts").first()
    if seen is None:
        return False
    if seen["status"] == GenerationBatch.Status.RUNNING:
        if not claims.claim_is_dead(claimed=seen["claimed"], holder=seen["claimed_by"], now=now):
            return False
        if seen["attempts"] >= claims.MAX_ATTEMPTS:
            _generation_batch_fail_claim(
                batch_id, seen,
                f"The worker writing these replies died {seen['attempts']} times (probably out of memory). "
                f"Try again, or tell an admin if this persists.",
            )
            return False
    # Conditional on the claim as it was seen: of two deliveries racing here, one updates the row.
    return bool(
        GenerationBatch.objects.filter(
            pk=batch_id, status=seen["status"], claimed=seen["claimed"], claimed_by=seen["claimed_by"]
        ).update(status=GenerationBatch.Status.RUNNING, claimed=now, claimed_by=holder, attempts=F("attempts") + 1)
    )


def _generation_batch_fail_claim(batch_id: int, seen: dict, error: str) -> bool:
    """Fail a running batch if its claim is still the one seen; a heartbeat in between wins."""
    return bool(
        GenerationBatch.objects.filter(
            pk=batch_id, status=GenerationBatch.Status.RUNNING, claimed=seen["claimed"], claimed_by=seen["claimed_by"]
        ).update(status=GenerationBatch.Status.FAILED, error=error, finished=timezone.now())
    )


GENERATION_STALLED = (
    "The worker writing these replies stopped responding (it was probably restarted or ran out of memory). "
    "Try again."
)


def generation_batch_abandon(*, batch_id: int, now=None) -> bool:
    """Fail a batch that is stranded, so a new request replaces it; False when it is not stranded.

    Stranded means pending for WORK_REQUEUE_SECONDS since its task was sent (the message was
    probably lost) or running under a dead claim. Failing it first means the lost message, should it
    turn up after all, finds the batch failed and generates nothing twice.
    """
    now = now or timezone.now()
    seen = GenerationBatch.objects.filter(pk=batch_id).values("status", "claimed", "claimed_by", "enqueued",
                                                              "created").first()
    if seen is None:
        return False
    if seen["status"] == GenerationBatch.Status.PENDING:
        sent = seen["enqueued"] or seen["created"]
        if sent >= now - timedelta(seconds=settings.WORK_REQUEUE_SECONDS):
            return False
        return bool(
            GenerationBatch.objects.filter(pk=batch_id, status=GenerationBatch.Status.PENDING, claimed__isnull=True,
                                           enqueued=seen["enqueued"]).update(
                status=GenerationBatch.Status.FAILED, error=GENERATION_STALLED, finished=now
            )
        )
    if seen["status"] == GenerationBatch.Status.RUNNING and claims.claim_is_dead(
        claimed=seen["claimed"], holder=seen["claimed_by"], now=now
    ):
        return _generation_batch_fail_claim(batch_id, seen, GENERATION_STALLED)
    return False


@dataclass
class BatchRecovery:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def generation_batches_recover(*, now=None) -> BatchRecovery:
    """Send again the task of every batch left pending for WORK_REQUEUE_SECONDS since it was last
    sent, and fail every running batch whose heartbeat stopped for ROUND_STALL_SECONDS.

    Only batches of their own (live chat turns, the demo's first batch): a round's batch is run by
    the round's generation step itself, which the round's own recovery looks after. Each change is
    a conditional update on the values seen, so sweeps running at the same time send each message
    once; a duplicate message would be harmless anyway, as the batch is claimed before it runs.
    """
    now = now or timezone.now()
    recovery = BatchRecovery()
    requeue_before = now - timedelta(seconds=settings.WORK_REQUEUE_SECONDS)
    standalone = GenerationBatch.objects.filter(training_round__isnull=True)
    waiting = standalone.filter(status=GenerationBatch.Status.PENDING, claimed__isnull=True).filter(
        Q(enqueued__lt=requeue_before) | Q(enqueued__isnull=True, created__lt=requeue_before)
    )
    for batch_id, enqueued in waiting.values_list("pk", "enqueued"):
        if GenerationBatch.objects.filter(pk=batch_id, status=GenerationBatch.Status.PENDING,
                                          enqueued=enqueued).update(enqueued=now):
            logger.warning("Generation batch %s was never claimed; sending its task again.", batch_id)
            _generation_batch_enqueue(batch_id)
            recovery.requeued.append(batch_id)
    stale_before = now - timedelta(seconds=settings.ROUND_STALL_SECONDS)
    stalled = standalone.filter(status=GenerationBatch.Status.RUNNING, claimed__lt=stale_before)
    for seen in stalled.values("pk", "claimed", "claimed_by"):
        if _generation_batch_fail_claim(seen["pk"], seen, GENERATION_STALLED):
            logger.warning("Generation batch %s failed: no heartbeat from its worker since %s.", seen["pk"],
                           seen["claimed"])
            recovery.failed.append(seen["pk"])
    return recovery


# Chooses which of one context's replies are compared: (replies, context messages) -> index pairs.
Pairing = Callable[[list["GeneratedReply"], list[dict[str, str]]], list[tuple[int, int]]]


def pair_at_random(seed: int) -> Pairing:
    """Pair each context's replies at random into disjoint pairs (a reply left over is unpaired)."""
    rng = random.Random(seed)

    def pairing(replies: list[GeneratedReply], context: list[dict[str, str]]) -> list[tuple[int, int]]:
        order = list(range(len(replies)))
        rng.shuffle(order)
        return list(zip(order[0::2], order[1::2]))

    return pairing


def generation_batch_run(
    *, batch_id: int, pairing: Pairing | None = None, on_fraction: Callable[[float], None] | None = None
) -> GenerationBatch:
    """Generate the batch's candidates and pair them into comparisons (idempotent).

    `pairing` picks which replies of a context are compared (indices into its replies); random
    disjoint pairs by default. While tokens are written the batch's `progress` is kept current (and
    passed to `on_fraction`), and a live chat's batch also keeps each reply's text so far in
    `partial_replies`, which the chat page shows as it grows.

    Generation runs outside any transaction (it takes long); its results are then written in one
    transaction together with the batch's move to done, so a crash leaves either nothing or all.
    """
    # Imported here: only workers generate, and these modules load torch and transformers.
    from preference_app.core.model_store import serving_model
    from training.generate import GenerationConfig, Progress, generate_replies

    holder = claims.holder_current()
    if not _claim_generation_batch(batch_id, holder):
        logger.info("Generation batch %s was already claimed or finished; nothing to do.", batch_id)
        return GenerationBatch.objects.get(pk=batch_id)
    batch = GenerationBatch.objects.select_related("model_version").get(pk=batch_id)
    mine = GenerationBatch.objects.filter(pk=batch_id, status=GenerationBatch.Status.RUNNING, claimed_by=holder)
    try:
        config = GenerationConfig(**batch.sampling)
        # Every setting, defaults included, so that each candidate records exactly how it was sampled.
        batch.sampling = config.to_dict()
        conversations = list(batch.conversations.order_by("id"))
        positions = [conversation.turns.count() for conversation in conversations]
        contexts = [messages_before(c.turns.order_by("index"), length) for c, length in zip(conversations, positions)]
        streams = any(conversation.source == Conversation.Source.LIVE_CHAT for conversation in conversations)
        reply_count = len(contexts) * config.candidates_per_context

        def report(progress: Progress) -> None:
            fields = {"progress": progress.fraction}
            if progress.partial:
                fields["partial_replies"] = [progress.partial.get(row, "") for row in range(reply_count)]
            mine.update(**fields)
            if on_fraction is not None:
                on_fraction(progress.fraction)

        with claims.Heartbeat(lambda: mine.update(claimed=timezone.now()), name=f"batch-{batch_id}-heartbeat"):
            loaded = serving_model(batch.model_version.path)
            replies = generate_replies(loaded.model, loaded.tokenizer, contexts, config, on_progress=report,
                                       progress_interval=STREAM_INTERVAL_SECONDS if streams else PROGRESS_INTERVAL_SECONDS,
                                       partial_text=streams)
        with transaction.atomic():
            locked = GenerationBatch.objects.select_for_update().get(pk=batch_id)
            # Another delivery took the batch over (this worker looked dead): its results count, not these.
            if locked.status != GenerationBatch.Status.RUNNING or locked.claimed_by != holder:
                return locked
            candidates_created, comparisons_created = _store_generated(
                batch, conversations, positions, contexts, replies, pairing or pair_at_random(config.seed)
            )
            locked.status = GenerationBatch.Status.DONE
            locked.candidates_created = candidates_created
            locked.comparisons_created = comparisons_created
            locked.finished = timezone.now()
            locked.save(update_fields=["status", "candidates_created", "comparisons_created", "finished"])
        return locked
    except Exception as error:
        mine.update(status=GenerationBatch.Status.FAILED, error=f"{type(error).__name__}: {error}",
                    finished=timezone.now())
        raise


def _store_generated(batch, conversations, positions, contexts, replies, pairing: Pairing) -> tuple[int, int]:
    """Create the candidates of every context and the comparisons `pairing` chooses among them."""
    candidates_created = comparisons_created = 0
    for conversation, position, context, context_replies in zip(conversations, positions, contexts, replies):
        candidates = [
            candidate_create_from_reply(
                conversation=conversation,
                context_length=position,
                reply=reply,
                model_version=batch.model_version,
                sampling=batch.sampling,
            )
            for reply in context_replies
        ]
        candidates_created += len(candidates)
        source = (
            Comparison.Source.LIVE_CHAT
            if conversation.source == Conversation.Source.LIVE_CHAT
            else Comparison.Source.GENERATED
        )
        for first, second in pairing(context_replies, context):
            comparison_create(
                candidates[first],
                candidates[second],
                source=source,
                training_round=batch.training_round,
                overlap_target=batch.overlap_target,
            )
            comparisons_created += 1
    return candidates_created, comparisons_created


def demo_first_batch_queue(*, prompt_count: int, sampling: Mapping[str, Any]) -> GenerationBatch | None:
    """Queue candidates for the first prompts that have no conversation yet (used by `make demo`)."""
    fresh = list(Prompt.objects.filter(conversations__isnull=True).order_by("id")[:prompt_count])
    if not fresh:
        return None
    version = model_version_base_ensure()
    with transaction.atomic():
        conversations = [conversation_start_from_prompt(prompt=prompt) for prompt in fresh]
        return generation_batch_create(model_version=version, conversations=conversations, sampling=sampling)
