from django.contrib import admin

from preference_app.annotation.models import Assignment


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    """Read-only: assignments are written by the annotation pages, and show who holds which slot."""

    list_display = ["id", "comparison", "annotator", "status", "left_candidate", "served_at", "expires_at"]
    list_filter = ["status"]
    raw_id_fields = ["comparison", "annotator"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
