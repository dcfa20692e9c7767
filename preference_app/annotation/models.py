"""Who is working on which comparison, and how it was shown to them.

An Assignment is created when a comparison is served to an annotator. While it is open and not
expired it holds one of the comparison's overlap slots (a lease), so two annotators are never
handed the same slot; it also remembers which candidate was shown on the left and when the
comparison was served, so the judgment can record position and time spent from the server's
point of view rather than trusting the browser.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from preference_app.core.models import Comparison, Judgment


class Assignment(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        JUDGED = "judged", "Judged"
        SKIPPED = "skipped", "Skipped"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    left_candidate = models.CharField(max_length=1, choices=Judgment.Side.choices)
    served_at = models.DateTimeField()
    # An open assignment counts against the overlap target only until then; an annotator who
    # walks away gives the slot back to the others without anyone having to clean up.
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="one_assignment_per_annotator"),
        ]
        indexes = [
            # Counting a comparison's live leases when choosing what to serve next.
            models.Index(fields=["comparison", "expires_at"], condition=Q(status="open"), name="assignment_open_lease"),
            # Finding the annotator's own current assignment.
            models.Index(fields=["annotator", "status"], name="assignment_annotator_status"),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on {self.comparison_id} ({self.status})"
