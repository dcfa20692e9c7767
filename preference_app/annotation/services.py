"""Writes of the annotation interface: leasing comparisons, judging them, and live chat.

The judgment itself is always stored by `core.services.judgment_submit`; this module decides what
an annotator is shown, translates what they clicked (left/right on a scale) into a judgment of the
comparison's candidates, and records how long they looked at it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from preference_app.annotation import selectors
from preference_app.annotation.models import Assignment
from preference_app.core.comparisons import candidate_create, comparison_create
from preference_app.core.models import (
    Candidate,
    Comparison,
    Conversation,
    Demonstration,
    GenerationBatch,
    Judgment,
    Turn,
)
from preference_app.core.selectors import generation_batch_is_stranded, model_version_serving
from preference_app.core.services import (
    InvalidInput,
    JudgmentOutcome,
    generation_batch_abandon,
    generation_batch_create,
    judgment_submit,
)
from preference_app.core.text import reads_as_blank

# Long enough for a careful judgment of two long replies; short enough that a comparison left open
# in an abandoned tab goes back to the queue the same session.
LEASE_DURATION = timedelta(minutes=10)
# A lease is taken under a row lock, then the comparison's slots are counted again; another
# annotator may have filled the last slot in between, in which case the next candidate is tried.
MAX_LEASE_ATTEMPTS = 10

# The scale as shown: positions 1-4 prefer the left reply (much better .. slightly better), 5-8 the
# right one (slightly better .. much better). Each maps to (side, strength) with strength 4 = much.
SCALE = {
    "1": ("left", 4),
    "2": ("left", 3),
    "3": ("left", 2),
    "4": ("left", 1),
    "5": ("right", 1),
    "6": ("right", 2),
    "7": ("right", 3),
    "8": ("right", 4),
}
TIE = "tie"
BOTH_BAD = "both_bad"

# Fields of training.generate.GenerationConfig, given as a mapping so this module does not load torch.
CHAT_SAMPLING = {"candidates_per_context": 2, "max_new_tokens": 160, "temperature": 0.8, "top_p": 0.95}
MAX_MESSAGE_CHARS = 4000
MAX_COMMENT_CHARS = 2000
# An edit replaces the reply the annotator judged worse, so it is recorded as strongly preferred.
EDIT_STRENGTH = 4


def preference_to_choice(*, preference: str, left_candidate: str) -> tuple[str, int | None]:
    """Translate a scale position seen on screen into (choice, strength) over candidates a and b."""
    if preference == TIE:
        return Judgment.Choice.TIE, None
    if preference == BOTH_BAD:
        return Judgment.Choice.BOTH_BAD, None
    if preference not in SCALE:
        raise InvalidInput("Choose a point on the scale, “about the same” or “both are bad”.")
    side, strength = SCALE[preference]
    right_candidate = Judgment.Side.B if left_candidate == Judgment.Side.A else Judgment.Side.A
    return (left_candidate if side == "left" else right_candidate), strength


def _lease(*, annotator, comparison: Comparison, now: datetime) -> Assignment:
    """Open (or reopen, after expiry) this annotator's assignment to the comparison."""
    expires_at = now + LEASE_DURATION
    try:
        # Nearly every lease is a first one, so the insert is tried first: one statement instead
        # of update_or_create's lookup, insert and their savepoints.
        with transaction.atomic():
            assignment = Assignment.objects.create(
                comparison=comparison,
                annotator=annotator,
                status=Assignment.Status.OPEN,
                served_at=now,
                expires_at=expires_at,
                # Left or right is drawn once per annotator and comparison, so a reload shows the same layout.
                left_candidate=random.choice(Judgment.Side.values),
            )
    except IntegrityError:
        # A lease that expired, or one this annotator's other tab took a moment ago: reopen it as it was drawn.
        assignment = Assignment.objects.select_for_update().get(comparison=comparison, annotator=annotator)
        assignment.status, assignment.served_at, assignment.expires_at = Assignment.Status.OPEN, now, expires_at
        assignment.save(update_fields=["status", "served_at", "expires_at"])
    assignment.comparison = comparison  # Keeps the candidates the caller fetched with it.
    return assignment


def _commit_without_waiting_for_disk() -> None:
    """Let this transaction's COMMIT return before PostgreSQL has flushed it to disk.

    Used for leases only. A flush costs about 3 ms here, a tenth of a submit. A lease is a
    reservation, not anything an annotator made, and it is flushed with the next synchronous commit
    or by the WAL writer within a fraction of a second; only a crash of PostgreSQL itself inside
    that window can forget it, and then the judgment of that one pair is refused with a clear
    message. Judgments keep the default, synchronous commit.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def assignment_next(*, annotator, now: datetime | None = None) -> Assignment | None:
    """The comparison this annotator should judge now, leased to them; None when the queue is empty.

    An annotator holds at most one lease: asking again (a reload, a second tab) returns the same one.
    On PostgreSQL the candidate row is locked with SKIP LOCKED, so concurrent requests each take a
    different comparison instead of queueing behind one another; the slots are then counted again
    under the lock, because the first query's snapshot may predate a lease another request has just
    committed. SQLite ignores the row lock and serialises writers instead, which is enough for the
    single-user development server.
    """
    now = now or timezone.now()
    current = selectors.assignment_current(annotator=annotator, now=now)
    if current is not None:
        return current
    for _ in range(MAX_LEASE_ATTEMPTS):
        with transaction.atomic():
            comparison = (
                selectors.comparisons_open_to(annotator=annotator, now=now)
                .select_related(*selectors.SHOWN_RELATIONS)
                .select_for_update(skip_locked=True, of=("self",))
                .first()
            )
            if comparison is None:
                return None
            # The lock returns the row's latest committed judgment_count, so only leases need counting.
            taken = comparison.judgment_count + selectors.leases_held(comparison=comparison, now=now)
            if taken >= comparison.overlap_target:
                continue
            _commit_without_waiting_for_disk()
            return _lease(annotator=annotator, comparison=comparison, now=now)
    return None


NOT_GIVEN_TO_YOU = "This comparison was not given to you; the next one has been loaded instead."


def _assignment_for(
    *, annotator, comparison_id: int, sources: list[str], relations: tuple[str, ...] = ("comparison",),
    refusal: str = NOT_GIVEN_TO_YOU,
) -> Assignment:
    """This annotator's assignment to the comparison, with `relations` fetched in the same query."""
    assignment = (
        Assignment.objects.select_related(*relations)
        .filter(annotator=annotator, comparison_id=comparison_id, comparison__source__in=sources)
        .first()
    )
    if assignment is None:
        raise InvalidInput(refusal)
    return assignment


def _judge(
    *, annotator, assignment: Assignment, choice: str, strength: int | None, rationale: str,
    flags: list[str] | None, now: datetime,
) -> JudgmentOutcome:
    """Store the judgment of an assignment; position and time come from the assignment, not the client.

    The stored left side is the one drawn when the pair was served, and the time spent runs from then
    to now, so neither can be forged or lost by the page or a script.
    """
    with transaction.atomic():
        outcome = judgment_submit(
            annotator=annotator,
            comparison=assignment.comparison,
            choice=choice,
            strength=strength,
            left_candidate=assignment.left_candidate,
            rationale=rationale,
            flags=flags,
            seconds_spent=max((now - assignment.served_at).total_seconds(), 0.0),
        )
        Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.JUDGED)
    return outcome


def assignment_judge(
    *,
    annotator,
    comparison_id: int,
    preference: str,
    rationale: str = "",
    flags: list[str] | None = None,
    now: datetime | None = None,
) -> JudgmentOutcome:
    """Judge a queue comparison that was served to this annotator.

    A judgment arriving after the lease expired is still stored: losing work is worse than a
    comparison collecting one judgment more than its overlap target.
    """
    assignment = _assignment_for(annotator=annotator, comparison_id=comparison_id, sources=selectors.QUEUE_SOURCES)
    choice, strength = preference_to_choice(preference=preference, left_candidate=assignment.left_candidate)
    return _judge(annotator=annotator, assignment=assignment, choice=choice, strength=strength, rationale=rationale,
                  flags=flags, now=now or timezone.now())


def assignment_judge_by_choice(
    *,
    annotator,
    comparison_id: int,
    choice: str,
    strength: int | None,
    rationale: str = "",
    flags: list[str] | None = None,
    now: datetime | None = None,
) -> JudgmentOutcome:
    """Judge a queue comparison leased to this annotator, in terms of candidates a and b (the API).

    The same path as the page: only a comparison served to the caller (POST /api/assignments/next/)
    can be judged, the left side and the time spent come from the lease, and a comparison that met
    its overlap target while the caller's lease had lapsed is refused rather than over-judged.
    """
    now = now or timezone.now()
    assignment = _assignment_for(
        annotator=annotator, comparison_id=comparison_id, sources=selectors.QUEUE_SOURCES,
        refusal="This comparison is not leased to you: take one with POST /api/assignments/next/ first.",
    )
    comparison = assignment.comparison
    lapsed = assignment.status != Assignment.Status.OPEN or assignment.expires_at <= now
    already_mine = assignment.status == Assignment.Status.JUDGED
    if lapsed and not already_mine and comparison.judgment_count >= comparison.overlap_target:
        raise InvalidInput("Your lease on this comparison lapsed and it has all the judgments it needs; take the next one.")
    return _judge(annotator=annotator, assignment=assignment, choice=choice, strength=strength, rationale=rationale,
                  flags=flags, now=now)


def assignment_skip(*, annotator, comparison_id: int) -> None:
    """Give the comparison back and never serve it to this annotator again; judged ones stay judged."""
    Assignment.objects.filter(
        annotator=annotator, comparison_id=comparison_id, status=Assignment.Status.OPEN
    ).update(status=Assignment.Status.SKIPPED)


# Live chat ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatState:
    """Where a live chat stands, as its page shows it."""

    conversation: Conversation
    turns: list[Turn]
    phase: str  # "writing", "generating", "judging", "failed" or "ended".
    pair: selectors.ShownPair | None = None
    error: str = ""
    # While generating: nothing will bring the replies by themselves soon, so the page offers a retry.
    stranded: bool = False

    WRITING = "writing"
    GENERATING = "generating"
    JUDGING = "judging"
    FAILED = "failed"
    ENDED = "ended"


def _normalised(text: str) -> str:
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()


def _clean_text(text: str, *, what: str, limit: int) -> str:
    text = _normalised(text)
    if reads_as_blank(text):
        raise InvalidInput(f"The {what} is empty: spaces and zero-width characters alone do not count.")
    if len(text) > limit:
        raise InvalidInput(f"The {what} may have at most {limit} characters, not {len(text)}.")
    return text


def _candidates_request(*, conversation: Conversation) -> GenerationBatch:
    policy = model_version_serving()
    if policy is None:
        raise InvalidInput("No policy is serving yet, so no replies can be written. Ask an admin to set one.")
    # A fresh seed per request: with a fixed seed a regenerated turn would repeat the replies judged bad.
    sampling = {**CHAT_SAMPLING, "seed": random.randrange(2**31)}
    return generation_batch_create(model_version=policy, conversations=[conversation], sampling=sampling)


def _append_turn(*, conversation: Conversation, role: str, text: str) -> Turn:
    index = conversation.turns.count()
    return Turn.objects.create(conversation=conversation, index=index, role=role, text=text)


def chat_start(*, annotator, text: str) -> Conversation:
    """Open a live chat with the annotator's first message and ask the serving policy for two replies."""
    text = _clean_text(text, what="message", limit=MAX_MESSAGE_CHARS)
    with transaction.atomic():
        conversation = Conversation.objects.create(source=Conversation.Source.LIVE_CHAT, annotator=annotator)
        _append_turn(conversation=conversation, role=Turn.Role.USER, text=text)
        _candidates_request(conversation=conversation)
    return conversation


def _locked(conversation: Conversation) -> Conversation:
    """Lock the chat's row, so a double-clicked message or judgment is applied once."""
    return Conversation.objects.select_for_update().get(pk=conversation.pk)


def chat_message_send(*, conversation: Conversation, text: str) -> None:
    text = _clean_text(text, what="message", limit=MAX_MESSAGE_CHARS)
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.ended:
            raise InvalidInput("This conversation has ended; start a new one.")
        last = conversation.turns.order_by("-index").first()
        if last is not None and last.role == Turn.Role.USER:
            raise InvalidInput("The assistant has not replied to your last message yet.")
        _append_turn(conversation=conversation, role=Turn.Role.USER, text=text)
        _candidates_request(conversation=conversation)


def chat_retry(*, annotator, conversation: Conversation) -> None:
    """Ask for new replies after a generation failed, or was stranded (its message lost, its worker dead).

    A stranded request is failed first, under a condition that it is still stranded, so a worker that
    picks it up after all generates nothing, and the chat gets one new pair of replies.
    """
    with transaction.atomic():
        conversation = _locked(conversation)
        state = chat_state(annotator=annotator, conversation=conversation)
        if state.phase == ChatState.GENERATING and state.stranded:
            batch = selectors.chat_latest_batch(conversation=conversation)
            if not generation_batch_abandon(batch_id=batch.pk):
                return
        elif state.phase != ChatState.FAILED:
            return
        _candidates_request(conversation=conversation)


def chat_state(*, annotator, conversation: Conversation, now: datetime | None = None) -> ChatState:
    """Work out the chat's phase; when replies have just arrived, open the annotator's assignment.

    The assignment fixes which reply is shown on the left and when the pair was first shown, as in
    the queue.
    """
    now = now or timezone.now()
    turns = list(conversation.turns.order_by("index"))
    if conversation.ended:
        return ChatState(conversation=conversation, turns=turns, phase=ChatState.ENDED)
    if not turns or turns[-1].role != Turn.Role.USER:
        return ChatState(conversation=conversation, turns=turns, phase=ChatState.WRITING)
    pending = selectors.chat_pending_comparison(
        annotator=annotator, conversation=conversation, context_length=len(turns)
    )
    if pending is not None:
        assignment = Assignment.objects.filter(comparison=pending, annotator=annotator).first()
        if assignment is None:
            with transaction.atomic():
                assignment, _ = Assignment.objects.get_or_create(
                    comparison=pending,
                    annotator=annotator,
                    defaults={
                        "left_candidate": random.choice(Judgment.Side.values),
                        "served_at": now,
                        # The chat's own comparisons are never offered to others, so this lease
                        # only needs to outlast the conversation.
                        "expires_at": now + timedelta(days=30),
                    },
                )
        assignment.comparison = pending  # Fetched with its candidates, which the page shows.
        pair = selectors.shown_pair(assignment=assignment)
        return ChatState(conversation=conversation, turns=turns, phase=ChatState.JUDGING, pair=pair)
    batch = selectors.chat_latest_batch(conversation=conversation)
    if batch is None or batch.status == GenerationBatch.Status.FAILED:
        error = batch.error if batch is not None else "No replies were requested."
        return ChatState(conversation=conversation, turns=turns, phase=ChatState.FAILED, error=error)
    if batch.status == GenerationBatch.Status.DONE:
        return ChatState(
            conversation=conversation, turns=turns, phase=ChatState.FAILED, error="The model wrote no replies."
        )
    return ChatState(conversation=conversation, turns=turns, phase=ChatState.GENERATING,
                     stranded=generation_batch_is_stranded(batch=batch, now=now))


def _edited_reply(*, pair: selectors.ShownPair, edit_left: str, edit_right: str) -> tuple[Candidate, str] | None:
    """The (original, new text) the annotator rewrote, if any; an unchanged text box is no edit."""
    edits = []
    for original, text in ((pair.left, edit_left), (pair.right, edit_right)):
        text = _normalised(text)
        # Browsers send text-box contents with CRLF line ends, so the original is compared the same way.
        if text and text != _normalised(original.text):
            edits.append((original, text))
    if len(edits) > 1:
        raise InvalidInput("Edit one of the replies, not both.")
    return edits[0] if edits else None


def _edit_record(*, annotator, original: Candidate, text: str, comparison: Comparison) -> Candidate:
    """Store an annotator's rewrite as a candidate, a judged edit-vs-original comparison and an SFT demonstration."""
    text = _clean_text(text, what="edited reply", limit=MAX_MESSAGE_CHARS)
    edited = candidate_create(
        conversation=original.conversation,
        context_length=original.context_length,
        text=text,
        edited_from=original,
        author=annotator,
    )
    edit_comparison = comparison_create(
        edited, original, source=Comparison.Source.EDIT, training_round=comparison.training_round, overlap_target=1
    )
    judgment_submit(
        annotator=annotator,
        comparison=edit_comparison,
        choice=Judgment.Choice.A,
        strength=EDIT_STRENGTH,
        left_candidate=Judgment.Side.A,
    )
    Demonstration.objects.create(
        conversation=original.conversation,
        context_length=original.context_length,
        text=text,
        author=annotator,
        candidate=edited,
    )
    return edited


@dataclass(frozen=True)
class ChatJudgmentOutcome:
    created: bool  # False for a repeated submit: nothing new was stored.
    edited: bool = False
    regenerating: bool = False  # Both replies were bad and nothing was edited: new ones were requested.


def chat_judge(
    *,
    annotator,
    conversation: Conversation,
    comparison_id: int,
    preference: str,
    rationale: str = "",
    flags: list[str] | None = None,
    edit_left: str = "",
    edit_right: str = "",
    now: datetime | None = None,
) -> ChatJudgmentOutcome:
    """Judge the chat's current pair and continue the conversation.

    The preferred reply continues it (the left one for "about the same"); an edited reply replaces
    it and is stored as an edit comparison and a demonstration (Bai et al. 2022, App. D.2). When
    both are bad and neither was edited, two new replies are requested for the same turn.
    """
    now = now or timezone.now()
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.ended:
            raise InvalidInput("This conversation has ended.")
        assignment = _assignment_for(
            annotator=annotator,
            comparison_id=comparison_id,
            sources=[Comparison.Source.LIVE_CHAT],
            relations=selectors.ASSIGNMENT_SHOWN_RELATIONS,  # The pair is shown again, edits checked against it.
        )
        if assignment.comparison.conversation_id != conversation.pk:
            raise InvalidInput("That comparison belongs to another conversation.")
        pair = selectors.shown_pair(assignment=assignment)
        edit = _edited_reply(pair=pair, edit_left=edit_left, edit_right=edit_right)
        choice, strength = preference_to_choice(preference=preference, left_candidate=assignment.left_candidate)
        outcome = _judge(annotator=annotator, assignment=assignment, choice=choice, strength=strength,
                         rationale=rationale, flags=flags, now=now)
        if not outcome.created:
            return ChatJudgmentOutcome(created=False)
        if edit is not None:
            original, text = edit
            continuation = _edit_record(annotator=annotator, original=original, text=text, comparison=pair.comparison)
        elif outcome.judgment.choice == Judgment.Choice.BOTH_BAD:
            _candidates_request(conversation=conversation)
            return ChatJudgmentOutcome(created=True, regenerating=True)
        elif outcome.judgment.choice == Judgment.Choice.TIE:
            continuation = pair.left
        else:
            chosen = outcome.judgment.choice
            continuation = pair.comparison.candidate_a if chosen == Judgment.Choice.A else pair.comparison.candidate_b
        _append_turn(conversation=conversation, role=Turn.Role.ASSISTANT, text=continuation.text)
    return ChatJudgmentOutcome(created=True, edited=edit is not None)


def chat_end(*, conversation: Conversation, rating: int, comment: str = "") -> bool:
    """Close the chat with an overall rating from 1 (bad) to 4 (good); False if it had already ended."""
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 4:
        raise InvalidInput("Rate the conversation from 1 (bad) to 4 (good).")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidInput(f"A comment may have at most {MAX_COMMENT_CHARS} characters.")
    ended = Conversation.objects.filter(pk=conversation.pk, ended__isnull=True).update(
        overall_rating=rating, comment=comment, ended=timezone.now()
    )
    return bool(ended)
