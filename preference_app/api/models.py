"""Records of the API app: export and import jobs run by Celery, and the provenance of imported pairs."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from preference_app.core.models import Comparison


class JobStatus(models.TextChoices):
    """Where an export or import job stands; a worker moves it pending -> running -> done or failed."""

    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ExportJob(models.Model):
    """A large export written to disk by a Celery worker and downloaded later by its requester.

    The worker claims a job with a conditional update (pending -> running), so a message delivered
    twice writes the files once.
    """

    Status = JobStatus

    # A random id, so one requester cannot guess the URL of another's download.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="export_jobs")
    options = models.JSONField(default=dict)  # The validated export query, as the API received it.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    rows = models.PositiveIntegerField(default=0)
    directory = models.CharField(max_length=500, blank=True)  # Holds the data file and README.md once done.
    data_file_name = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"Export {self.pk} ({self.status})"


class ImportFormat(models.TextChoices):
    HH = "hh", "Anthropic HH-RLHF"
    TRL = "trl", "TRL preference JSONL"


class ImportJob(models.Model):
    """An import of one preference file, committed a batch of lines at a time and resumable.

    `byte_offset` and `lines_read` say how far into the (decompressed) file the committed batches
    reach; each batch's pairs, counts, errors and new offset are written in one transaction, so a
    run that dies (kill -9, a lost worker) is resumed from the last committed batch and stores no
    pair twice. A batch commits only if the offset is still the one its run started from, so two
    runs of the same job (a redelivered message, a resume beside a live run) never both store it.
    """

    Status = JobStatus

    # A random id, so one requester cannot guess another's job.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Nobody when the job was started from the shell.
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="import_jobs"
    )
    source_path = models.CharField(max_length=1000)
    file_name = models.CharField(max_length=255)  # As its owner named it; errors and provenance name it so.
    uploaded = models.BooleanField(default=False)  # The app's own copy of an upload, removed once done.
    file_format = models.CharField(max_length=8, choices=ImportFormat.choices)
    strength = models.PositiveSmallIntegerField(default=2)  # For pairs without a margin.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    bytes_total = models.BigIntegerField(null=True, blank=True)  # Decompressed size, measured before batch one.
    byte_offset = models.BigIntegerField(default=0)
    lines_read = models.PositiveIntegerField(default=0)
    pairs_stored = models.PositiveIntegerField(default=0)
    duplicates_skipped = models.PositiveIntegerField(default=0)
    lines_skipped = models.PositiveIntegerField(default=0)  # Bad lines; the first of them are in `errors`.
    errors = models.JSONField(default=list, blank=True)  # "file:line: reason".
    error = models.TextField(blank=True)  # Why the file as a whole could not be imported.
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(null=True, blank=True)  # When the last batch was committed.
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"Import of {self.file_name} ({self.status})"


class ImportedPair(models.Model):
    """Where an imported comparison came from, and the key that makes a second import skip it.

    The key is the SHA-256 of the pair's context messages and both replies, so the same pair met
    again (in the same file, a later file, or the other import format) is recognised as a duplicate.
    """

    Format = ImportFormat

    key_sha256 = models.CharField(max_length=64, unique=True)
    comparison = models.OneToOneField(Comparison, on_delete=models.CASCADE, related_name="import_record")
    file_format = models.CharField(max_length=8, choices=Format.choices)
    file_name = models.CharField(max_length=255)
    line = models.PositiveIntegerField()
    job = models.ForeignKey(ImportJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="pairs")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.file_name}:{self.line}"
