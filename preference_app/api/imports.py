"""Import jobs for HH-RLHF and TRL files: creating, uploading, queueing, running and resuming them, a batch at a time."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, reset_queries, transaction
from django.db.models import F
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from preference_app.api.import_stream import ImportFileError, Line, decompressed_size, json_row, lines_read
from preference_app.api.models import ImportedPair, ImportJob
from preference_app.api.parsing import PARSERS, ParsedPair, pair_key
from preference_app.core import events
from preference_app.core.comparisons import candidate_new, comparison_new
from preference_app.core.errors import InvalidInput
from preference_app.core.models import Candidate, Comparison, Conversation, Judgment, Prompt, Turn
from preference_app.core.prompts import import_file_size_check, prompt_text_clean, text_sha256

# HH-RLHF and TRL files carry a bare preference, no strength. Imported judgments get strength 2
# ("better"), the middle of the 1-4 scale that is not the weakest, so that an export dropping the
# weakest preferences (Bai et al. 2022) keeps them. Importers can choose another value.
DEFAULT_IMPORTED_STRENGTH = 2
# An import commits every IMPORT_BATCH_LINES lines, or sooner once the batch's lines hold
# IMPORT_BATCH_BYTES, so that a file of long lines keeps the batch's memory bounded too.
IMPORT_BATCH_LINES = 1000
IMPORT_BATCH_BYTES = 16 * 1024 * 1024
# Rows per INSERT statement for tables with several rows a pair, within PostgreSQL's parameter limit.
BULK_ROWS = 2000
# A job keeps the first bad lines' messages; lines_skipped counts them all.
MAX_JOB_ERRORS = 100


def _import_annotator(file_format: str):
    """The inactive user that imported judgments belong to, one per source format."""
    user, created = get_user_model().objects.get_or_create(username=f"imported-{file_format}", defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _prompt_text(messages: list[dict[str, str]]) -> str | None:
    """The first user message as an imported prompt's text, so it can also be used for new generations.

    A first message that is no valid prompt (over the length limit) leaves the conversation without
    one rather than refusing the pair: the pair itself is still good data.
    """
    first = next((message["content"] for message in messages if message["role"] == "user"), "")
    try:
        return prompt_text_clean(first)
    except InvalidInput:
        return None


def _imported_prompts(texts: set[str]) -> dict[str, Prompt]:
    """The prompts with these texts, stored as imported prompts where they are new; keyed by text."""
    by_hash = {text_sha256(text): text for text in texts}
    # ON CONFLICT DO NOTHING: a prompt stored meanwhile (by another import, or by hand) is kept as it is.
    Prompt.objects.bulk_create(
        [Prompt(text=text, text_sha256=key, source=Prompt.Source.IMPORTED) for key, text in by_hash.items()],
        ignore_conflicts=True,
    )
    return {by_hash[prompt.text_sha256]: prompt for prompt in Prompt.objects.filter(text_sha256__in=by_hash)}


@dataclass(frozen=True)
class _NewPair:
    key: str
    line: int
    pair: ParsedPair


def _pairs_store(new: list[_NewPair], *, job: ImportJob, annotator) -> Comparison:
    """Store pairs as conversations, candidates, comparisons and judgments, a few bulk inserts in all.

    One INSERT per table for the whole batch: stored a pair at a time, with a judgment_submit
    each, 100,000 pairs took 28 minutes.
    """
    prompt_texts = [_prompt_text(item.pair.messages) for item in new]
    prompts = _imported_prompts({text for text in prompt_texts if text is not None})
    conversations = Conversation.objects.bulk_create(
        Conversation(prompt=prompts.get(text), source=Conversation.Source.IMPORTED) for text in prompt_texts
    )
    Turn.objects.bulk_create(
        (
            Turn(conversation=conversation, index=index, role=message["role"], text=message["content"])
            for conversation, item in zip(conversations, new)
            for index, message in enumerate(item.pair.messages)
        ),
        batch_size=BULK_ROWS,
    )
    candidates = Candidate.objects.bulk_create(
        candidate_new(conversation=conversation, context_length=len(item.pair.messages), text=text)
        for conversation, item in zip(conversations, new)
        for text in (item.pair.chosen, item.pair.rejected)
    )
    comparisons = Comparison.objects.bulk_create(
        comparison_new(candidates[2 * number], candidates[2 * number + 1], source=Comparison.Source.IMPORTED,
                       judgment_count=1)
        for number in range(len(new))
    )
    # The files do not say which reply was shown on the left; "a" is recorded for every pair.
    Judgment.objects.bulk_create(
        Judgment(
            comparison=comparison,
            annotator=annotator,
            choice=Judgment.Choice.A,
            strength=item.pair.strength or job.strength,
            left_candidate=Judgment.Side.A,
        )
        for comparison, item in zip(comparisons, new)
    )
    ImportedPair.objects.bulk_create(
        ImportedPair(
            key_sha256=item.key, comparison=comparison, file_format=job.file_format, file_name=job.file_name[:255],
            line=item.line, job=job,
        )
        for comparison, item in zip(comparisons, new)
    )
    return comparisons[-1]


@dataclass
class _Batch:
    """Lines read since the last commit: their pairs (first occurrence of each), duplicates and errors."""

    start: int  # Decompressed offset of the batch's first line.
    end: int
    end_line: int
    lines: int = 0
    size: int = 0
    duplicates: int = 0
    pairs: dict[str, _NewPair] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, line: Line, *, parse: Callable[[object], ParsedPair], file_name: str) -> None:
        self.end, self.end_line, self.lines = line.end, line.number, self.lines + 1
        if line.data is None:
            limit = settings.IMPORT_MAX_LINE_BYTES
            self.errors.append(f"{file_name}:{line.number}: the line is longer than {limit} bytes "
                               f"(IMPORT_MAX_LINE_BYTES), so it was skipped.")
            return
        if not line.data.strip():
            return
        self.size += len(line.data)
        try:
            pair = parse(json_row(line.data))
        except ValueError as error:  # InvalidInput too: every reason a line's content is refused.
            self.errors.append(f"{file_name}:{line.number}: {error}")
            return
        key = pair_key(pair)
        if key in self.pairs:
            self.duplicates += 1
        else:
            self.pairs[key] = _NewPair(key=key, line=line.number, pair=pair)

    @property
    def full(self) -> bool:
        return self.lines >= IMPORT_BATCH_LINES or self.size >= IMPORT_BATCH_BYTES


def _batch_commit(job: ImportJob, batch: _Batch, *, annotator, last: bool) -> ImportJob | None:
    """Store a batch and move the job's offset past it in one transaction; the job as committed.

    None when the job's offset is no longer where this batch starts: another run of the same job
    committed it (or the job was finished), and this run stops.
    """
    for attempt in range(3):
        try:
            with transaction.atomic():
                locked = ImportJob.objects.select_for_update().get(pk=job.pk)
                if locked.status != ImportJob.Status.RUNNING or locked.byte_offset != batch.start:
                    return None
                known = set(
                    ImportedPair.objects.filter(key_sha256__in=list(batch.pairs)).values_list("key_sha256", flat=True)
                )
                new = [item for key, item in batch.pairs.items() if key not in known]
                if new:
                    last_comparison = _pairs_store(new, job=locked, annotator=annotator)
                    # As judgment_submit does for one judgment; one event a batch is enough for
                    # what listens (rounds counting judgments towards starting the next round).
                    events.publish_on_commit(events.judgment_recorded, sender=Judgment, comparison=last_comparison)
                locked.byte_offset, locked.lines_read = batch.end, batch.end_line
                locked.pairs_stored += len(new)
                locked.duplicates_skipped += batch.duplicates + len(known)
                locked.lines_skipped += len(batch.errors)
                locked.errors = (locked.errors + batch.errors)[:MAX_JOB_ERRORS]
                locked.updated = timezone.now()
                if last:
                    locked.status, locked.finished = ImportJob.Status.DONE, locked.updated
                locked.save()
            break
        except IntegrityError:
            # Another job stored one of these pairs between the check and the insert. The
            # transaction left nothing behind; the next attempt finds the pair and skips it.
            if attempt == 2:
                raise
    return locked


def _import_job_read(job: ImportJob, on_batch: Callable[[ImportJob], None] | None) -> None:
    path, limit = Path(job.source_path), settings.IMPORT_MAX_DECOMPRESSED_BYTES
    if not path.is_file():
        raise InvalidInput(f"{job.file_name}: the file to import is no longer there.")
    if job.bytes_total is None:
        job.bytes_total = decompressed_size(path, limit=limit)
        ImportJob.objects.filter(pk=job.pk).update(bytes_total=job.bytes_total)
    parse, annotator = PARSERS[job.file_format], _import_annotator(job.file_format)
    batch = _Batch(start=job.byte_offset, end=job.byte_offset, end_line=job.lines_read)
    lines = lines_read(
        path, start=job.byte_offset, start_line=job.lines_read, max_line_bytes=settings.IMPORT_MAX_LINE_BYTES,
        limit=limit,
    )
    for line in lines:
        batch.add(line, parse=parse, file_name=job.file_name)
        if batch.full:
            committed = _batch_commit(job, batch, annotator=annotator, last=False)
            if committed is None:
                return
            if on_batch:
                on_batch(committed)
            # With DEBUG on, Django keeps every query's SQL; a batch's INSERTs hold all its text.
            reset_queries()
            batch = _Batch(start=batch.end, end=batch.end, end_line=batch.end_line)
    committed = _batch_commit(job, batch, annotator=annotator, last=True)
    if committed and on_batch:
        on_batch(committed)


def _import_options_check(*, file_format: str, strength) -> None:
    if file_format not in PARSERS:
        raise InvalidInput(f"The import format must be one of {', '.join(PARSERS)}.")
    if isinstance(strength, bool) or not isinstance(strength, int) or not 1 <= strength <= 4:
        raise InvalidInput("The strength of imported judgments must be from 1 to 4.")


def import_job_create(
    *, path: Path, file_format: str, strength: int = DEFAULT_IMPORTED_STRENGTH, user=None, file_name: str = "",
    uploaded: bool = False, job_id: uuid.UUID | None = None,
) -> ImportJob:
    """Record an import of the file at `path`; import_job_run (or its Celery task) runs it."""
    path = Path(path)
    _import_options_check(file_format=file_format, strength=strength)
    if not path.is_file():
        raise InvalidInput(f"{path.name} does not exist.")
    import_file_size_check(path=path)
    return ImportJob.objects.create(
        id=job_id or uuid.uuid4(), requested_by=user, source_path=str(path.resolve()),
        file_name=(file_name or path.name)[:255], uploaded=uploaded, file_format=file_format, strength=strength,
    )


def imports_directory() -> Path:
    return Path(settings.VAR_DIR) / "imports"


def import_upload_check(*, upload) -> None:
    """Refuse an upload over IMPORT_MAX_BYTES before it is kept (the command checks the file it is given)."""
    limit = settings.IMPORT_MAX_BYTES
    if upload.size > limit:
        raise InvalidInput(
            f"{Path(upload.name).name} is {upload.size / 1e6:.1f} MB; imports are limited to {limit / 1e6:.1f} MB "
            f"(IMPORT_MAX_BYTES). Split the file and import the parts."
        )


def import_job_upload(*, user, upload, file_format: str, strength: int = DEFAULT_IMPORTED_STRENGTH) -> ImportJob:
    """Keep an uploaded file under VAR_DIR/imports and queue its import once the transaction commits.

    `upload` is a Django UploadedFile: already on disk in a temporary file when it is large, and
    copied from there a chunk at a time.
    """
    _import_options_check(file_format=file_format, strength=strength)
    import_upload_check(upload=upload)
    job_id = uuid.uuid4()
    directory = imports_directory() / str(job_id)
    directory.mkdir(parents=True)
    # A fixed name on disk: the uploader's name is only shown (gzip is recognised by its content).
    path = directory / "upload"
    try:
        with path.open("wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        with transaction.atomic():
            job = import_job_create(path=path, file_format=file_format, strength=strength, user=user,
                                    file_name=Path(upload.name).name, uploaded=True, job_id=job_id)
            import_job_enqueue(job=job)
    except Exception:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return job


def import_job_enqueue(*, job: ImportJob) -> None:
    """Queue a job's Celery task once the surrounding transaction commits (again, to resume it)."""
    from preference_app.api.tasks import import_job_task

    if job.status == ImportJob.Status.DONE:
        raise InvalidInput("This import is done; there is nothing left to resume.")
    transaction.on_commit(lambda: import_job_task.delay(str(job.pk)))


def import_job_for_file(*, path: Path, file_format: str, strength: int = DEFAULT_IMPORTED_STRENGTH) -> ImportJob:
    """The unfinished job importing this file in this format, to resume it; else a new job."""
    unfinished = ImportJob.objects.filter(
        source_path=str(Path(path).resolve()), file_format=file_format, uploaded=False,
        status__in=(ImportJob.Status.PENDING, ImportJob.Status.RUNNING),
    ).order_by("-created").first()
    return unfinished or import_job_create(path=path, file_format=file_format, strength=strength)


def import_job_run(*, job_id, on_batch: Callable[[ImportJob], None] | None = None) -> ImportJob:
    """Run or resume an import job from its last committed batch; safe to call twice at once.

    A bad line is reported as "file:line: reason" and skipped; a file that cannot be imported at
    all (unreadable, a corrupt archive, too large once decompressed) fails the job before anything
    is stored. A job that is not done can always be run again: it continues where it stopped.
    """
    claimed = ImportJob.objects.filter(pk=job_id).exclude(status=ImportJob.Status.DONE).update(
        status=ImportJob.Status.RUNNING, started=Coalesce(F("started"), Now()), error="", finished=None
    )
    job = ImportJob.objects.get(pk=job_id)
    if not claimed:
        return job
    try:
        _import_job_read(job, on_batch)
    except (InvalidInput, ImportFileError) as error:
        _import_job_fail(job, str(error))
    except Exception as error:
        _import_job_fail(job, f"{type(error).__name__}: {error}")
        raise
    job.refresh_from_db()
    if job.status == ImportJob.Status.DONE and job.uploaded:
        shutil.rmtree(Path(job.source_path).parent, ignore_errors=True)
    return job


def _import_job_fail(job: ImportJob, error: str) -> None:
    ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING).update(
        status=ImportJob.Status.FAILED, error=error, finished=timezone.now()
    )


def preferences_import(*, path: Path, file_format: str, strength: int = DEFAULT_IMPORTED_STRENGTH) -> ImportJob:
    """Import a file now, in this process, as a job; the job once done or failed."""
    job = import_job_create(path=path, file_format=file_format, strength=strength)
    return import_job_run(job_id=job.pk)
