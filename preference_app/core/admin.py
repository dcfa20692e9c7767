from django.contrib import admin

from preference_app.core.models import (
    Candidate,
    Comparison,
    Conversation,
    Demonstration,
    GenerationBatch,
    Judgment,
    Prompt,
    Turn,
)


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "short_text", "source", "tags", "created"]
    list_filter = ["source", "created"]
    search_fields = ["text"]
    readonly_fields = ["text_sha256", "created"]

    @admin.display(description="text")
    def short_text(self, prompt: Prompt) -> str:
        return prompt.text[:100]


class TurnInline(admin.TabularInline):
    model = Turn
    extra = 0


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "source", "prompt", "annotator", "overall_rating", "ended", "created"]
    list_filter = ["source", "overall_rating", "created"]
    search_fields = ["turns__text", "comment"]
    raw_id_fields = ["prompt", "annotator"]
    inlines = [TurnInline]


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["id", "short_text", "model_version", "conversation", "context_length", "token_count",
                    "finished_with_eos", "generation_seconds", "created"]
    list_filter = ["model_version", "finished_with_eos", "created"]
    search_fields = ["text"]
    raw_id_fields = ["conversation", "edited_from", "author"]

    @admin.display(description="text")
    def short_text(self, candidate: Candidate) -> str:
        return candidate.text[:100]


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "context_length", "training_round", "source", "overlap_target", "created"]
    list_filter = ["source", "training_round", "created"]
    raw_id_fields = ["conversation", "candidate_a", "candidate_b"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "annotator", "choice_as_seen", "strength", "choice", "left_candidate",
                    "seconds_spent", "created"]
    list_filter = ["choice", "strength", "left_candidate", "created"]
    search_fields = ["rationale", "annotator__username"]
    raw_id_fields = ["comparison", "annotator"]

    @admin.display(description="as the annotator saw it")
    def choice_as_seen(self, judgment: Judgment) -> str:
        """The choice in the page's terms: the stored choice names a candidate, and either candidate
        may have been the one shown on the left."""
        if judgment.choice not in (Judgment.Choice.A, Judgment.Choice.B):
            return judgment.get_choice_display()
        side = "left" if judgment.choice == judgment.left_candidate else "right"
        return f"The {side} reply is better"


@admin.register(Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "context_length", "author", "created"]
    search_fields = ["text"]
    raw_id_fields = ["conversation", "author", "candidate"]


@admin.register(GenerationBatch)
class GenerationBatchAdmin(admin.ModelAdmin):
    list_display = ["id", "model_version", "status", "candidates_created", "comparisons_created", "created", "finished"]
    list_filter = ["status", "model_version"]
    readonly_fields = ["error", "claimed", "finished"]
    filter_horizontal = ["conversations"]
