"""Prompts: cleaning their text, creating them one by one or from a file, and starting conversations from them."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction

from preference_app.core.errors import InvalidInput
from preference_app.core.models import Conversation, Prompt, Turn
from preference_app.core.text import reads_as_blank

BUILTIN_PROMPTS_FILE = Path(__file__).with_name("builtin_prompts.jsonl")
MAX_PROMPT_CHARS = 8000


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_text_clean(text: str) -> str:
    """A prompt's text as it is stored, or InvalidInput saying why it cannot be a prompt.

    Shared by prompt_create and the bulk import, so that both accept exactly the same prompts.
    """
    text = text.strip()
    if reads_as_blank(text):
        raise InvalidInput("A prompt needs some text: spaces and zero-width characters alone are not a prompt.")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"A prompt may have at most {MAX_PROMPT_CHARS} characters, not {len(text)}.")
    return text


def prompt_create(*, text: str, source: str, tags: list[str] | None = None, created_by=None) -> tuple[Prompt, bool]:
    """Store a prompt unless the same text is already stored; returns (prompt, created)."""
    text = prompt_text_clean(text)
    if tags is not None and not (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)):
        raise InvalidInput("Tags must be a list of strings.")
    return Prompt.objects.get_or_create(
        text_sha256=text_sha256(text),
        defaults={"text": text, "source": source, "tags": tags or [], "created_by": created_by},
    )


@dataclass
class PromptImportReport:
    created: int = 0
    skipped_duplicates: int = 0
    prompts: list[Prompt] = field(default_factory=list)


def prompt_rows(path: Path) -> Iterable[tuple[int, dict]]:
    """Yield (line number, row) from a JSONL or CSV file with a `text` field and optional `tags`."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise InvalidInput(f"{path.name}: a CSV file needs a header row with a `text` column.")
        for row in reader:
            tags = [tag.strip() for tag in (row.get("tags") or "").split(";") if tag.strip()]
            yield reader.line_num, {"text": row["text"], "tags": tags}
        return
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidInput(f"{path.name}, line {number}: not valid JSON ({error.msg}).") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise InvalidInput(f"{path.name}, line {number}: expected an object with a string `text` field.")
        yield number, row


def import_file_size_check(*, path: Path) -> None:
    """Refuse a file over IMPORT_MAX_BYTES before reading it: an import runs in one transaction and
    a runaway file would hold it, and the process's memory, for as long as it takes."""
    size, limit = Path(path).stat().st_size, settings.IMPORT_MAX_BYTES
    if size > limit:
        raise InvalidInput(
            f"{Path(path).name} is {size / 1e6:.1f} MB; imports are limited to {limit / 1e6:.1f} MB "
            f"(IMPORT_MAX_BYTES). Split the file and import the parts."
        )


def prompts_import(*, path: Path, source: str = Prompt.Source.IMPORTED, created_by=None) -> PromptImportReport:
    """Import prompts from JSONL or CSV in one transaction: a bad line stores nothing at all."""
    path = Path(path)
    import_file_size_check(path=path)
    if path.suffix.lower() not in {".jsonl", ".csv"}:
        raise InvalidInput(f"{path.name}: prompts are imported from .jsonl or .csv files.")
    report = PromptImportReport()
    with transaction.atomic():
        for number, row in prompt_rows(path):
            try:
                prompt, created = prompt_create(
                    text=row["text"], source=source, tags=row.get("tags") or [], created_by=created_by
                )
            except InvalidInput as error:
                raise InvalidInput(f"{path.name}, line {number}: {error}") from None
            report.prompts.append(prompt)
            if created:
                report.created += 1
            else:
                report.skipped_duplicates += 1
    return report


def builtin_prompts_load() -> PromptImportReport:
    return prompts_import(path=BUILTIN_PROMPTS_FILE, source=Prompt.Source.BUILTIN)


def conversation_start_from_prompt(*, prompt: Prompt) -> Conversation:
    conversation = Conversation.objects.create(prompt=prompt, source=Conversation.Source.PROMPT)
    Turn.objects.create(conversation=conversation, index=0, role=Turn.Role.USER, text=prompt.text)
    return conversation
