"""Writes of the live chat: starting it, sending messages, judging and editing replies, retries and the end.

An annotator talks with the serving policy; each of their messages asks it for two replies, which
are judged in place through the same assignments as the queue (`services.py`), and the reply they
prefer, or rewrite, continues the conversation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from preference_app.annotation import selectors
from preference_app.annotation.models import Assignment
from preference_app.annotation.services import assignment_for, assignment_judgment_store, preference_to_choice
from preference_app.core.comparisons import candidate_create, comparison_create
from preference_app.core.errors import InvalidInput
from preference_app.core.generation import generation_batch_abandon, generation_batch_create
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
from preference_app.core.services import judgment_submit
from preference_app.core.text import reads_as_blank

# Fields of training.generate.GenerationConfig, given as a mapping so this module does not load torch.
CHAT_SAMPLING = {"candidates_per_context": 2, "temperature": 0.8, "top_p": 0.95}
MAX_MESSAGE_CHARS = 4000
MAX_COMMENT_CHARS = 2000
# An edit replaces the reply the annotator judged worse, so it is recorded as strongly preferred.
EDIT_STRENGTH = 4


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
    # While generating: each reply's text so far, as the worker last wrote it.
    drafts: tuple[str, ...] = ()

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
    sampling = {**CHAT_SAMPLING, "max_new_tokens": settings.CHAT_MAX_NEW_TOKENS, "seed": random.randrange(2**31)}
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
                     stranded=generation_batch_is_stranded(batch=batch, now=now), drafts=tuple(batch.partial_replies))


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
        assignment = assignment_for(
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
        outcome = assignment_judgment_store(
            annotator=annotator, assignment=assignment, choice=choice, strength=strength,
            rationale=rationale, flags=flags, now=now,
        )
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
