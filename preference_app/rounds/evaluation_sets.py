"""The frozen evaluation set: the prompts every round's policy is judged on and nothing is trained on.

Rounds used to evaluate on whichever stored prompts happened to have a text hash starting with 0 or
1, so imported and annotator-written prompts drifted into the set, the set grew with every import,
and the same prompts also trained the reward model and DPO. Here the set is an explicit object,
chosen once (the built-in list by default, or an admin's file), stored with a content hash and
never edited. Every version's prompts stay out of generation for training, SFT, the reward model
and DPO for good, matched by the hash of their text, so an import that happens to contain the same
prompt cannot leak it back in. Writes and reads live together here because they are few and share
the hashing rule.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from django.db import transaction
from django.db.models import Max

from preference_app.core.errors import InvalidInput
from preference_app.core.models import EvaluationSet
from preference_app.core.prompts import MAX_PROMPT_CHARS, prompt_rows, text_sha256
from preference_app.core.text import reads_as_blank

BUILTIN_EVALUATION_FILE = Path(__file__).resolve().parent.parent / "core" / "builtin_evaluation_prompts.jsonl"
BUILTIN_NAME = "built-in evaluation prompts"
MAX_EVALUATION_PROMPTS = 2000


def content_sha256(texts: list[str]) -> str:
    """The hash of the exact, ordered list of prompt texts."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")).hexdigest()


def _clean_texts(texts: list[str]) -> list[str]:
    cleaned = [text.strip() if isinstance(text, str) else "" for text in texts]
    if not cleaned:
        raise InvalidInput("An evaluation set needs at least one prompt.")
    if len(cleaned) > MAX_EVALUATION_PROMPTS:
        raise InvalidInput(f"An evaluation set may have at most {MAX_EVALUATION_PROMPTS} prompts, not {len(cleaned)}.")
    for number, text in enumerate(cleaned, start=1):
        if reads_as_blank(text):
            raise InvalidInput(f"Prompt {number} of the evaluation set is empty (or only zero-width characters).")
        if len(text) > MAX_PROMPT_CHARS:
            raise InvalidInput(f"Prompt {number} has {len(text)} characters; at most {MAX_PROMPT_CHARS} are allowed.")
    if len(set(cleaned)) != len(cleaned):
        raise InvalidInput("The evaluation set lists the same prompt twice.")
    return cleaned


def evaluation_set_create(*, name: str, texts: list[str], created_by=None, activate: bool = True) -> EvaluationSet:
    """Store a new frozen version (or find the identical one already stored) and optionally make it active."""
    cleaned = _clean_texts(texts)
    digest = content_sha256(cleaned)
    with transaction.atomic():
        evaluation_set = EvaluationSet.objects.filter(content_sha256=digest).first()
        if evaluation_set is None:
            version = (EvaluationSet.objects.aggregate(last=Max("version"))["last"] or 0) + 1
            evaluation_set = EvaluationSet.objects.create(
                name=name.strip() or f"evaluation set {version}", version=version, prompts=cleaned,
                prompt_sha256s=[text_sha256(text) for text in cleaned], content_sha256=digest, created_by=created_by,
            )
        if activate and not evaluation_set.is_active:
            EvaluationSet.objects.filter(is_active=True).update(is_active=False)
            EvaluationSet.objects.filter(pk=evaluation_set.pk).update(is_active=True)
            evaluation_set.is_active = True
    return evaluation_set


def evaluation_set_from_file(*, path: Path, name: str = "", created_by=None, activate: bool = True) -> EvaluationSet:
    """A new version from a JSONL or CSV prompt file (the format prompts are imported from)."""
    path = Path(path)
    if path.suffix.lower() not in {".jsonl", ".csv"}:
        raise InvalidInput(f"{path.name}: evaluation prompts are read from .jsonl or .csv files.")
    texts = [row["text"] for _, row in prompt_rows(path)]
    return evaluation_set_create(name=name or path.stem, texts=texts, created_by=created_by, activate=activate)


def evaluation_set_active_ensure() -> EvaluationSet:
    """The active set, creating the built-in one the first time a round needs it."""
    active = EvaluationSet.objects.filter(is_active=True).first()
    if active is not None:
        return active
    return evaluation_set_from_file(path=BUILTIN_EVALUATION_FILE, name=BUILTIN_NAME)


def evaluation_prompt_hashes() -> frozenset[str]:
    """Text hashes of every prompt of every evaluation set ever stored: none may be trained on."""
    hashes: set[str] = set()
    for prompt_sha256s in EvaluationSet.objects.values_list("prompt_sha256s", flat=True):
        hashes.update(prompt_sha256s)
    return frozenset(hashes)


def opening_prompt_sha256(messages: list[dict[str, str]]) -> str | None:
    """The hash of a context's first user message, the text an evaluation prompt would appear as."""
    for message in messages:
        if message.get("role") == "user":
            return text_sha256(message.get("content", "").strip())
    return None
