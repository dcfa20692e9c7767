"""Query-string filters of the list endpoints and exports, validated by serializers by hand.

Each serializer turns the query string into a typed value or a 400 naming the bad parameter;
selectors then apply the typed value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime

from rest_framework import serializers

from preference_app.core.models import Comparison, Judgment, ModelVersion, Prompt, TrainingRound


@dataclass(frozen=True)
class PreferenceFilters:
    """Which comparisons and judgments a list or an export covers; None means "any".

    Conditions on judgments (annotator, dates, strength, choice) also decide which judgments count
    when a comparison's votes are aggregated.
    """

    round_number: int | None = None
    model_version: int | None = None  # Either candidate written by this model version.
    source: str | None = None  # Comparison source: generated, live_chat, edit, imported.
    comparison: int | None = None
    annotator: str | None = None  # A pseudonym.
    created_after: datetime | None = None  # Judgment dates (comparison dates on the comparison list).
    created_before: datetime | None = None
    min_strength: int | None = None
    choice: str | None = None
    min_agreement: float | None = None  # Fraction of a comparison's judgments agreeing with its outcome.
    # Comparisons any annotator flagged unsafe or unusable: False leaves them out, True keeps only them.
    flagged: bool | None = None
    # Comparisons with a reply the model did not finish (cut at its token limit): False leaves them
    # out, True keeps only them.
    cut_off: bool | None = None

    def describe(self) -> dict:
        """The filters that are set, as JSON-ready values (for dataset cards and stored jobs)."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in asdict(self).items()
            if value is not None
        }


def _ordering_field(allowed: list[str]) -> serializers.ChoiceField:
    choices = [name for field in allowed for name in (field, f"-{field}")]
    return serializers.ChoiceField(choices=choices, required=False, help_text="Sort key; a leading '-' reverses it.")


class _DateRangeFilter(serializers.Serializer):
    created_after = serializers.DateTimeField(required=False, help_text="Only rows created at or after this time.")
    created_before = serializers.DateTimeField(required=False, help_text="Only rows created before this time.")

    def validate(self, attrs):
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after and before and after >= before:
            raise serializers.ValidationError({"created_before": "Must be later than created_after."})
        return attrs


def preference_filters_from(data: dict) -> PreferenceFilters:
    """PreferenceFilters from a filter serializer's validated data; absent parameters mean "any".

    Query parameters use the names researchers type (`round`), the dataclass the names the
    selectors read (`round_number`); only that one differs.
    """
    names = {field.name for field in fields(PreferenceFilters)}
    values = {("round_number" if key == "round" else key): value for key, value in data.items()}
    return PreferenceFilters(**{key: value for key, value in values.items() if key in names})


class PreferenceFilterSerializer(_DateRangeFilter):
    """Filters shared by judgment lists and exports."""

    round = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1, help_text="Training round number.")
    model_version = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="Model version id of either candidate."
    )
    source = serializers.ChoiceField(choices=Comparison.Source.values, required=False)
    annotator = serializers.CharField(required=False, max_length=40, help_text="Annotator pseudonym.")
    min_strength = serializers.IntegerField(required=False, min_value=1, max_value=4)
    min_agreement = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0,
        help_text="Minimum fraction of a comparison's judgments that agree with its majority outcome.",
    )

    def to_filters(self) -> PreferenceFilters:
        return preference_filters_from(self.validated_data)


class JudgmentFilterSerializer(PreferenceFilterSerializer):
    comparison = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    choice = serializers.ChoiceField(choices=Judgment.Choice.choices, required=False)
    ordering = _ordering_field(["id", "created", "strength", "seconds_spent"])


class ComparisonFilterSerializer(_DateRangeFilter):
    round = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1, help_text="Training round number.")
    model_version = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="Model version id of either candidate."
    )
    source = serializers.ChoiceField(choices=Comparison.Source.values, required=False)
    min_agreement = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    ordering = _ordering_field(["id", "created"])

    def to_filters(self) -> PreferenceFilters:
        return preference_filters_from(self.validated_data)


class PromptFilterSerializer(_DateRangeFilter):
    source = serializers.ChoiceField(choices=Prompt.Source.values, required=False)
    search = serializers.CharField(required=False, max_length=200, help_text="Text the prompt contains.")
    ordering = _ordering_field(["id", "created"])


class TrainingRoundFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=TrainingRound.Status.values, required=False)
    ordering = _ordering_field(["number", "created"])


class ModelVersionFilterSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ModelVersion.Kind.values, required=False)
    round = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    ordering = _ordering_field(["id", "created", "name"])
