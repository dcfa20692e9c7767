"""Rounds and model versions in the Django admin, with the dashboard's actions as admin actions."""

from django import forms
from django.contrib import admin, messages

from preference_app.core.errors import InvalidInput
from preference_app.core.models import EvaluationSet, ModelVersion, TrainingRound
from preference_app.rounds import services
from preference_app.rounds.evaluation_sets import evaluation_set_create
from preference_app.rounds.round_settings import RoundSettings


class TrainingRoundForm(forms.ModelForm):
    """A round's settings are checked by RoundSettings, as on the dashboard and through the API."""

    class Meta:
        model = TrainingRound
        fields = "__all__"

    def clean_config(self):
        try:
            return RoundSettings.from_dict(self.cleaned_data["config"]).to_dict()
        except InvalidInput as error:
            raise forms.ValidationError(str(error)) from None


@admin.register(TrainingRound)
class TrainingRoundAdmin(admin.ModelAdmin):
    form = TrainingRoundForm
    list_display = ["number", "status", "step", "progress", "created", "started", "finished"]
    list_filter = ["status"]
    readonly_fields = ["error", "failed_status", "step_claimed"]
    actions = ["cancel_rounds", "retry_rounds"]

    def has_add_permission(self, request) -> bool:
        # A round is started on the dashboard or through the API: only round_start numbers it, checks
        # that no other round runs and queues its first step. One added here would sit pending for ever.
        return False

    @admin.action(description="Cancel the selected rounds", permissions=["start"])
    def cancel_rounds(self, request, queryset):
        done = sum(services.round_cancel(round_id=pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"{done} round(s) cancelled; finished rounds were left as they were.", messages.SUCCESS)

    @admin.action(description="Retry the selected failed rounds from the step that failed", permissions=["start"])
    def retry_rounds(self, request, queryset):
        done = sum(services.round_retry(round_id=pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"{done} round(s) resumed; rounds that had not failed were left as they were.", messages.SUCCESS)

    def has_start_permission(self, request) -> bool:
        return request.user.has_perm("core.start_round")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "is_serving", "training_round", "parent", "base_model_id", "created"]
    list_filter = ["kind", "is_serving", "created"]
    search_fields = ["name", "path", "base_model_id"]
    raw_id_fields = ["parent", "training_round"]
    actions = ["serve_version"]

    @admin.action(description="Serve the selected version (promote or roll back)", permissions=["start"])
    def serve_version(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to serve.", messages.ERROR)
            return
        version = services.model_version_promote(version=queryset.get())
        self.message_user(request, f"{version.name} now serves as the {version.get_kind_display().lower()}.", messages.SUCCESS)

    def has_start_permission(self, request) -> bool:
        return request.user.has_perm("core.start_round")


@admin.register(EvaluationSet)
class EvaluationSetAdmin(admin.ModelAdmin):
    """Evaluation sets are frozen: the admin lists them and switches the active one, never edits them.

    A new version comes from `manage.py evaluation_set FILE`.
    """

    list_display = ["version", "name", "prompt_count", "content_sha256", "is_active", "created"]
    readonly_fields = ["name", "version", "prompts", "prompt_sha256s", "content_sha256", "is_active", "created_by", "created"]
    actions = ["activate"]

    @admin.display(description="prompts")
    def prompt_count(self, evaluation_set: EvaluationSet) -> int:
        return len(evaluation_set.prompts)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Evaluate new rounds on the selected set", permissions=["start"])
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one evaluation set.", messages.ERROR)
            return
        chosen = queryset.get()
        evaluation_set_create(name=chosen.name, texts=chosen.prompts, activate=True)
        self.message_user(request, f"New rounds are evaluated on {chosen}.", messages.SUCCESS)

    def has_start_permission(self, request) -> bool:
        return request.user.has_perm("core.start_round")
