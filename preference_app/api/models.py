"""Records of the API app: export jobs run by Celery, and the provenance of imported pairs."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from preference_app.core.models import Comparison


class ExportJob(models.Model):
    """A large export written to disk by a Celery worker and downloaded later by its requester.

    The worker claims a job with a conditional update (pending -> running), so a message delivered
    twice writes the files once.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

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


class ImportedPair(models.Model):
    """Where an imported comparison came from, and the key that makes a second import skip it.

    The key is the SHA-256 of the pair's context messages and both replies, so the same pair met
    again (in the same file, a later file, or the other import format) is recognised as a duplicate.
    """

    class Format(models.TextChoices):
        HH = "hh", "Anthropic HH-RLHF"
        TRL = "trl", "TRL preference JSONL"

    key_sha256 = models.CharField(max_length=64, unique=True)
    comparison = models.OneToOneField(Comparison, on_delete=models.CASCADE, related_name="import_record")
    file_format = models.CharField(max_length=8, choices=Format.choices)
    file_name = models.CharField(max_length=255)
    line = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.file_name}:{self.line}"
