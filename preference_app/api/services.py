"""Writes of the API app: writing exports to disk, and export jobs that a Celery worker writes."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from preference_app.api.export import ExportQuery, RowCounter, dataset_card, export_chunks, export_rows
from preference_app.api.export_selectors import agreement_statistics
from preference_app.api.models import ExportJob


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
