"""Writes of the API app: importing preference datasets, writing exports to disk, export jobs."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from preference_app.api import formats
from preference_app.api.export import ExportQuery, RowCounter, dataset_card, export_chunks, export_rows
from preference_app.api.models import ExportJob, ImportedPair
from preference_app.api.selectors import agreement_statistics
from preference_app.core.models import Candidate, Comparison, Conversation, Prompt, Turn
from preference_app.core.services import InvalidInput, import_file_size_check, judgment_submit, prompt_create

# HH-RLHF and TRL files carry a bare preference, no strength. Imported judgments get strength 2
# ("better"), the middle of the 1-4 scale that is not the weakest, so that an export dropping the
# weakest preferences (Bai et al. 2022) keeps them. Importers can choose another value.
DEFAULT_IMPORTED_STRENGTH = 2
ROLES = ("system", "user", "assistant")
_HH_MARKER = re.compile(r"(\n\nHuman:|\n\nAssistant:)")
_MARKER_ROLES = {formats.HUMAN: "user", formats.ASSISTANT: "assistant"}


@dataclass(frozen=True)
class ParsedPair:
    messages: list[dict[str, str]]  # The context before the two replies.
    chosen: str
    rejected: str
    strength: int | None = None  # From a TRL `margin` column, when the file has one.


@dataclass
class ImportReport:
    created: int = 0
    skipped_duplicates: int = 0


def _check_text(text: str, what: str) -> str:
    # PostgreSQL text cannot hold NUL characters; rejecting them here keeps both databases alike.
    if "\x00" in text:
        raise InvalidInput(f"{what} contains a NUL character.")
    return text


def _after_space(completion: str, what: str) -> str:
    """A reply as stored: the text after the one space that follows "Assistant:" in a transcript."""
    if not completion.startswith(" "):
        raise InvalidInput(f"{what} must follow the marker after one space, so that it can be written back exactly.")
    return completion[1:]


def hh_transcript_parse(transcript: str) -> list[dict[str, str]]:
    """Messages of an HH transcript: text before the first marker becomes a system message."""
    parts = _HH_MARKER.split(transcript)
    messages = [{"role": "system", "content": parts[0]}] if parts[0] else []
    for marker, text in zip(parts[1::2], parts[2::2]):
        content = _after_space(text, "Every turn") if text else text
        messages.append({"role": _MARKER_ROLES[marker], "content": _check_text(content, "A turn")})
    if formats.hh_transcript(messages) != transcript:
        raise InvalidInput("The transcript cannot be stored so that it is written back exactly.")
    return messages


def _common_prefix_length(first: str, second: str) -> int:
    length = 0
    for left, right in zip(first, second):
        if left != right:
            break
        length += 1
    return length


def hh_pair_parse(row) -> ParsedPair:
    """An HH-RLHF pair: the prompt is the longest common prefix ending in "\\n\\nAssistant:"."""
    if not isinstance(row, dict) or not isinstance(row.get("chosen"), str) or not isinstance(row.get("rejected"), str):
        raise InvalidInput('expected an object with string "chosen" and "rejected" transcripts.')
    chosen, rejected = row["chosen"], row["rejected"]
    end = chosen.rfind(formats.ASSISTANT, 0, _common_prefix_length(chosen, rejected))
    if end < 0:
        raise InvalidInput('"chosen" and "rejected" share no prefix ending in "\\n\\nAssistant:".')
    prompt_end = end + len(formats.ASSISTANT)
    messages = hh_transcript_parse(chosen[: end])
    if not any(message["role"] == "user" for message in messages):
        raise InvalidInput("the transcripts have no Human turn before the replies.")
    return ParsedPair(
        messages=messages,
        chosen=_check_text(_after_space(chosen[prompt_end:], "The chosen reply"), "The chosen reply"),
        rejected=_check_text(_after_space(rejected[prompt_end:], "The rejected reply"), "The rejected reply"),
    )


def _messages(value, what: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(
        isinstance(message, dict)
        and message.get("role") in ROLES
        and isinstance(message.get("content"), str)
        and set(message) == {"role", "content"}
        for message in value
    ):
        raise InvalidInput(f'"{what}" must be a list of {{"role", "content"}} messages with role system, user or assistant.')
    for message in value:
        _check_text(message["content"], f'A message of "{what}"')
    return value


def _single_reply(messages: list[dict[str, str]], what: str) -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise InvalidInput(f'"{what}" must hold exactly one assistant message after the prompt.')
    return messages[0]["content"]


def _margin_strength(row: dict) -> int | None:
    if "margin" not in row:
        return None
    margin = row["margin"]
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin != margin:
        raise InvalidInput('"margin" must be a number.')
    # Exports write the mean strength (1-4) as the margin; rounding and clamping reads it back.
    return min(4, max(1, round(margin)))


def trl_pair_parse(row) -> ParsedPair:
    """A TRL preference row: conversational or standard, with an explicit or implicit prompt."""
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        raise InvalidInput('expected an object with "chosen" and "rejected".')
    strength = _margin_strength(row)
    if isinstance(row["chosen"], list):
        chosen, rejected = _messages(row["chosen"], "chosen"), _messages(row["rejected"], "rejected")
        if "prompt" in row:
            messages = _messages(row["prompt"], "prompt")
        else:
            shared = 0
            while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
                shared += 1
            messages, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not messages:
            raise InvalidInput("the pair has no prompt messages before the replies.")
        return ParsedPair(messages, _single_reply(chosen, "chosen"), _single_reply(rejected, "rejected"), strength)
    if not isinstance(row["chosen"], str) or not isinstance(row["rejected"], str):
        raise InvalidInput('"chosen" and "rejected" must both be strings or both be lists of messages.')
    if "prompt" not in row:
        parsed = hh_pair_parse(row)
        return ParsedPair(parsed.messages, parsed.chosen, parsed.rejected, strength)
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput('"prompt" must be a non-empty string when the replies are strings.')
    if prompt.startswith(formats.HUMAN) and prompt.endswith(formats.ASSISTANT):
        messages = hh_transcript_parse(prompt[: -len(formats.ASSISTANT)])
    else:
        messages = [{"role": "user", "content": _check_text(prompt, '"prompt"')}]
    # Standard-format replies continue the prompt text, usually after one space, which is dropped.
    chosen, rejected = (text[1:] if text.startswith(" ") else text for text in (row["chosen"], row["rejected"]))
    return ParsedPair(messages, _check_text(chosen, '"chosen"'), _check_text(rejected, '"rejected"'), strength)


PARSERS: dict[str, Callable[[object], ParsedPair]] = {
    ImportedPair.Format.HH: hh_pair_parse,
    ImportedPair.Format.TRL: trl_pair_parse,
}


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    number = 0
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                yield number, line
    except UnicodeDecodeError:
        raise InvalidInput(f"{path.name}, line {number + 1}: not UTF-8 text.") from None
    except (OSError, EOFError, zlib.error) as error:
        raise InvalidInput(f"{path.name}: cannot be read ({error}).") from None


def pair_key(pair: ParsedPair) -> str:
    canonical = json.dumps([pair.messages, pair.chosen, pair.rejected], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _import_annotator(file_format: str):
    """The inactive user that imported judgments belong to, one per source format."""
    user, created = get_user_model().objects.get_or_create(username=f"imported-{file_format}", defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _imported_prompt(messages: list[dict[str, str]]) -> Prompt | None:
    """The first user message as an imported prompt, so it can also be used for new generations.

    A first message that is no valid prompt (over the length limit) leaves the conversation without
    one rather than failing the import: the pair itself is still good data.
    """
    first = next((message["content"] for message in messages if message["role"] == "user"), "")
    try:
        prompt, _ = prompt_create(text=first, source=Prompt.Source.IMPORTED)
    except InvalidInput:
        return None
    return prompt


def _pair_store(*, pair: ParsedPair, key: str, annotator, strength: int, file_format: str, file_name: str, line: int):
    conversation = Conversation.objects.create(prompt=_imported_prompt(pair.messages), source=Conversation.Source.IMPORTED)
    Turn.objects.bulk_create(
        Turn(conversation=conversation, index=index, role=message["role"], text=message["content"])
        for index, message in enumerate(pair.messages)
    )
    position = len(pair.messages)
    chosen, rejected = (
        Candidate.objects.create(conversation=conversation, context_length=position, text=text)
        for text in (pair.chosen, pair.rejected)
    )
    comparison = Comparison.objects.create(
        conversation=conversation,
        context_length=position,
        candidate_a=chosen,
        candidate_b=rejected,
        source=Comparison.Source.IMPORTED,
    )
    # The files do not say which reply was shown on the left; "a" is recorded for every pair.
    judgment_submit(annotator=annotator, comparison=comparison, choice="a", strength=strength, left_candidate="a")
    ImportedPair.objects.create(
        key_sha256=key, comparison=comparison, file_format=file_format, file_name=file_name[:255], line=line
    )


def preferences_import(*, path: Path, file_format: str, strength: int = DEFAULT_IMPORTED_STRENGTH) -> ImportReport:
    """Import preference pairs from JSONL (optionally .gz), all or nothing.

    Each pair becomes a conversation with its context turns, two candidates, an imported comparison
    and one judgment for the chosen reply. A pair already imported (same context and replies, from
    any file) is skipped. Any bad line raises InvalidInput naming the file and line, and the
    transaction leaves nothing of the import behind.
    """
    path = Path(path)
    import_file_size_check(path=path)
    if file_format not in PARSERS:
        raise InvalidInput(f"The import format must be one of {', '.join(PARSERS)}.")
    if not 1 <= strength <= 4:
        raise InvalidInput("The strength of imported judgments must be from 1 to 4.")
    parse = PARSERS[file_format]
    report = ImportReport()
    with transaction.atomic():
        annotator = _import_annotator(file_format)
        for number, line in _numbered_lines(path):
            if not line.strip():
                continue
            try:
                pair = parse(json.loads(line))
            except json.JSONDecodeError as error:
                raise InvalidInput(f"{path.name}, line {number}: not valid JSON ({error.msg}).") from None
            except InvalidInput as error:
                raise InvalidInput(f"{path.name}, line {number}: {error}") from None
            key = pair_key(pair)
            if ImportedPair.objects.filter(key_sha256=key).exists():
                report.skipped_duplicates += 1
                continue
            _pair_store(
                pair=pair,
                key=key,
                annotator=annotator,
                strength=pair.strength or strength,
                file_format=file_format,
                file_name=path.name,
                line=number,
            )
            report.created += 1
    return report


@dataclass(frozen=True)
class ExportResult:
    rows: int
    data_path: Path
    card_path: Path


def export_write(*, query: ExportQuery, directory: Path) -> ExportResult:
    """Write an export's data file and README.md into `directory`, each complete or not at all.

    Each file is written under a temporary name and renamed, so a reader never sees half a file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data_path = directory / query.data_file_name
    partial = directory / f".{query.data_file_name}.partial"
    counter = RowCounter(export_rows(query))
    with partial.open("wb") as out:
        for chunk in export_chunks(query, iter(counter)):
            out.write(chunk)
    partial.replace(data_path)
    card_path = directory / "README.md"
    card = dataset_card(query, statistics=agreement_statistics(filters=query.filters), rows=counter.count)
    partial_card = directory / ".README.md.partial"
    partial_card.write_text(card, encoding="utf-8")
    partial_card.replace(card_path)
    return ExportResult(rows=counter.count, data_path=data_path, card_path=card_path)


def exports_directory() -> Path:
    return Path(settings.VAR_DIR) / "exports"


def export_job_create(*, user, query: ExportQuery) -> ExportJob:
    """Record an export job and queue it once the surrounding transaction commits."""
    from preference_app.api.tasks import export_job_task

    with transaction.atomic():
        job = ExportJob.objects.create(requested_by=user, options=query.to_json(), data_file_name=query.data_file_name)
        transaction.on_commit(lambda: export_job_task.delay(str(job.pk)))
    return job


def export_job_run(*, job_id) -> ExportJob:
    """Write a job's export (idempotent: only the caller that moves it from pending runs it)."""
    claimed = ExportJob.objects.filter(pk=job_id, status=ExportJob.Status.PENDING).update(
        status=ExportJob.Status.RUNNING
    )
    job = ExportJob.objects.get(pk=job_id)
    if not claimed:
        return job
    directory = exports_directory() / str(job.pk)
    try:
        result = export_write(query=ExportQuery.from_json(job.options), directory=directory)
    except Exception as error:
        shutil.rmtree(directory, ignore_errors=True)
        ExportJob.objects.filter(pk=job.pk).update(
            status=ExportJob.Status.FAILED, error=f"{type(error).__name__}: {error}", finished=timezone.now()
        )
        raise
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.DONE, rows=result.rows, directory=str(directory), finished=timezone.now()
    )
    job.refresh_from_db()
    return job


def export_job_file(*, job: ExportJob, name: str) -> Path:
    """A finished job's file; the name comes from the job record, never from the request."""
    return Path(job.directory) / name
