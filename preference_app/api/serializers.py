"""Input serializers validate requests; output serializers shape responses (pseudonyms, no paths)."""

from __future__ import annotations

from dataclasses import replace

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from preference_app.api import formats
from preference_app.api.export import ExportQuery
from preference_app.api.filters import PreferenceFilterSerializer
from preference_app.api.imports import DEFAULT_IMPORTED_STRENGTH
from preference_app.api.models import ExportJob, ImportedPair, ImportJob
from preference_app.api.pseudonyms import annotator_pseudonym
from preference_app.api.selectors import context_messages
from preference_app.api.votes import comparison_outcome, comparison_votes
from preference_app.core.models import Comparison, Judgment, ModelVersion, Prompt, TrainingRound
from preference_app.core.prompts import MAX_PROMPT_CHARS
from preference_app.core.roles import sees_internals
from preference_app.core.services import ALLOWED_FLAGS, MAX_RATIONALE_CHARS


@extend_schema_field(OpenApiTypes.STR)
class PseudonymField(serializers.ReadOnlyField):
    """A user id shown as the user's pseudonym."""

    def to_representation(self, value):
        return annotator_pseudonym(value)


class PromptSerializer(serializers.ModelSerializer):
    created_by = PseudonymField(source="created_by_id", allow_null=True)

    class Meta:
        model = Prompt
        fields = ["id", "text", "source", "tags", "created_by", "created"]


class PromptCreateSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=MAX_PROMPT_CHARS)
    tags = serializers.ListField(child=serializers.CharField(max_length=100), max_length=20, required=False)


class MessageSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField()


class CandidateSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    model_version = serializers.IntegerField(source="model_version_id", allow_null=True)


class VotesSerializer(serializers.Serializer):
    a = serializers.IntegerField()
    b = serializers.IntegerField()
    tie = serializers.IntegerField()
    both_bad = serializers.IntegerField()


class ComparisonSerializer(serializers.ModelSerializer):
    """A comparison with its context, both candidates and its aggregated votes."""

    round = serializers.SerializerMethodField()
    context = serializers.SerializerMethodField()
    candidate_a = CandidateSerializer()
    candidate_b = CandidateSerializer()
    votes = serializers.SerializerMethodField()
    outcome = serializers.SerializerMethodField()
    agreement = serializers.SerializerMethodField()

    class Meta:
        model = Comparison
        fields = [
            "id", "round", "source", "context", "candidate_a", "candidate_b", "overlap_target", "created",
            "votes", "outcome", "agreement",
        ]

    def get_round(self, comparison) -> int | None:
        return comparison.training_round.number if comparison.training_round else None

    @extend_schema_field(MessageSerializer(many=True))
    def get_context(self, comparison):
        return context_messages(comparison)

    @extend_schema_field(VotesSerializer)
    def get_votes(self, comparison):
        return comparison_votes(comparison)

    @extend_schema_field(serializers.CharField(allow_null=True, help_text="a, b, tie or both_bad; null when unjudged."))
    def get_outcome(self, comparison):
        return comparison_outcome(comparison_votes(comparison)) if comparison.judgment_total else None

    def get_agreement(self, comparison) -> float | None:
        """The fraction of judgments that made the most common choice."""
        return comparison.votes_top / comparison.judgment_total if comparison.judgment_total else None


class JudgmentSerializer(serializers.ModelSerializer):
    annotator = PseudonymField(source="annotator_id")

    class Meta:
        model = Judgment
        fields = [
            "id", "comparison", "annotator", "choice", "strength", "left_candidate", "rationale", "flags",
            "seconds_spent", "created",
        ]


class JudgmentCreateSerializer(serializers.Serializer):
    """A judgment of a comparison leased to the caller. Which reply was shown on the left and the
    seconds spent are the server's (from the lease), never the client's, so they cannot be forged."""

    comparison = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    choice = serializers.ChoiceField(choices=Judgment.Choice.choices)
    strength = serializers.IntegerField(allow_null=True, required=False, default=None, min_value=1, max_value=4)
    rationale = serializers.CharField(max_length=MAX_RATIONALE_CHARS, allow_blank=True, required=False, default="")
    flags = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(ALLOWED_FLAGS)), max_length=len(ALLOWED_FLAGS), required=False
    )


class AssignmentCandidateSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()


class AssignmentSerializer(serializers.Serializer):
    """A comparison leased to the caller: judge it with POST /api/judgments/ before `expires_at`."""

    comparison = serializers.IntegerField(source="comparison.id")
    messages = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))
    candidate_a = AssignmentCandidateSerializer(source="comparison.candidate_a")
    candidate_b = AssignmentCandidateSerializer(source="comparison.candidate_b")
    left_candidate = serializers.CharField(source="assignment.left_candidate")
    expires_at = serializers.DateTimeField(source="assignment.expires_at")


ROUND_ERROR_HIDDEN = "The round failed; an admin can read why on the dashboard."


def _is_path(key, value) -> bool:
    """A checkpoint or reference location: a key named for one, or an absolute path as the value."""
    named = isinstance(key, str) and (key == "path" or key.endswith(("_path", "_dir")))
    return named or (isinstance(value, str) and value.startswith(("/", "~", "\\")))


def without_paths(value):
    """`value` (a config or metrics JSON) with every file path left out, at any depth."""
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items() if not _is_path(key, item)}
    if isinstance(value, list):
        return [without_paths(item) for item in value if not _is_path(None, item)]
    return value


class _InternalsForAdmins(serializers.ModelSerializer):
    """Config and metrics keep their file paths only for admins (core.roles.sees_internals)."""

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        if not sees_internals(request.user if request else None):
            data["config"], data["metrics"] = without_paths(data["config"]), without_paths(data["metrics"])
            if data.get("error"):
                # A traceback names the server's files and modules, and a broker error its address.
                data["error"] = ROUND_ERROR_HIDDEN
        return data


class TrainingRoundSerializer(_InternalsForAdmins):
    started_by = PseudonymField(source="started_by_id", allow_null=True)

    class Meta:
        model = TrainingRound
        fields = [
            "id", "number", "status", "step", "progress", "config", "metrics", "error", "started_by", "created",
            "started", "finished",
        ]


class ModelVersionSerializer(_InternalsForAdmins):
    training_round = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True)

    class Meta:
        # The checkpoint path is left out: it describes the server's disk, not the model.
        model = ModelVersion
        fields = ["id", "name", "kind", "parent", "training_round", "base_model_id", "config", "metrics", "is_serving",
                  "created"]


class ExportQuerySerializer(PreferenceFilterSerializer):
    dataset = serializers.ChoiceField(choices=formats.DATASET_FORMATS, default=formats.TRL_CONVERSATIONAL)
    file_format = serializers.ChoiceField(choices=formats.FILE_FORMATS, default=formats.JSONL)
    margin = serializers.BooleanField(
        required=False, default=False, help_text="Pair formats: add a `margin` column (mean strength)."
    )
    include_ties = serializers.BooleanField(
        required=False, default=False, help_text="Pair formats: keep tied and both-bad comparisons, with margin 0."
    )
    include_flagged = serializers.BooleanField(
        required=False, default=False,
        help_text="Keep comparisons an annotator flagged unsafe or unusable (left out by default, as in training).",
    )
    exclude_cut_off = serializers.BooleanField(
        required=False, default=False,
        help_text="Leave out comparisons with a reply the model did not finish (cut at its token limit).",
    )

    def to_query(self) -> ExportQuery:
        data = self.validated_data
        filters = replace(self.to_filters(), flagged=None if data["include_flagged"] else False,
                          cut_off=False if data["exclude_cut_off"] else None)
        return ExportQuery(
            dataset=data["dataset"],
            file_format=data["file_format"],
            with_margin=data["margin"],
            include_ties=data["include_ties"],
            filters=filters,
        )


class ExportJobSerializer(serializers.ModelSerializer):
    data_url = serializers.SerializerMethodField()
    card_url = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = ["id", "status", "options", "rows", "error", "created", "finished", "data_url", "card_url"]

    def get_data_url(self, job) -> str | None:
        return reverse("api:export-job-data", args=[job.pk]) if job.status == ExportJob.Status.DONE else None

    def get_card_url(self, job) -> str | None:
        return reverse("api:export-job-card", args=[job.pk]) if job.status == ExportJob.Status.DONE else None


class ImportJobCreateSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="HH-RLHF or TRL preference JSONL, optionally gzipped.")
    file_format = serializers.ChoiceField(choices=ImportedPair.Format.choices)
    strength = serializers.IntegerField(
        min_value=1, max_value=4, default=DEFAULT_IMPORTED_STRENGTH,
        help_text="Strength (1-4) recorded for pairs without a margin.",
    )


class ImportJobSerializer(serializers.ModelSerializer):
    """An import's progress; the path of the file on the server is left out."""

    class Meta:
        model = ImportJob
        fields = [
            "id", "status", "file_name", "file_format", "strength", "bytes_total", "byte_offset", "lines_read",
            "pairs_stored", "duplicates_skipped", "lines_skipped", "errors", "error", "created", "started", "updated",
            "finished",
        ]
