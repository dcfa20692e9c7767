"""Import jobs in the Django admin: upload a file to import, watch its progress, resume it."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from preference_app.api import imports
from preference_app.api.models import ImportJob
from preference_app.api.permissions import IMPORT_PREFERENCES
from preference_app.core.errors import InvalidInput


class ImportJobUploadForm(forms.ModelForm):
    upload = forms.FileField(help_text="HH-RLHF or TRL preference JSONL, optionally gzipped.")

    class Meta:
        model = ImportJob
        fields = ["upload", "file_format", "strength"]

    def clean_upload(self):
        upload = self.cleaned_data["upload"]
        try:
            imports.import_upload_check(upload=upload)
        except InvalidInput as error:
            raise forms.ValidationError(str(error)) from None
        return upload

    def clean_strength(self):
        strength = self.cleaned_data["strength"]
        if not 1 <= strength <= 4:
            raise forms.ValidationError("The strength of imported judgments must be from 1 to 4.")
        return strength


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ["file_name", "status", "file_format", "progress", "pairs_stored", "duplicates_skipped",
                    "lines_skipped", "requested_by", "created", "finished"]
    list_filter = ["status", "file_format", "created"]
    search_fields = ["file_name"]
    actions = ["resume"]
    readonly_fields = ["id", "status", "file_name", "source_path", "file_format", "strength", "requested_by",
                       "bytes_total", "byte_offset", "lines_read", "pairs_stored", "duplicates_skipped",
                       "lines_skipped", "errors", "error", "created", "started", "updated", "finished"]

    @admin.display(description="read")
    def progress(self, job: ImportJob) -> str:
        if not job.bytes_total:
            return "-"
        return f"{100 * job.byte_offset / job.bytes_total:.0f}%"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ImportJobUploadForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["upload", "file_format", "strength"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        # The service keeps the upload and queues the job; the admin then shows the job it made.
        job = imports.import_job_upload(
            user=request.user, upload=form.cleaned_data["upload"], file_format=obj.file_format, strength=obj.strength
        )
        obj.pk = job.pk
        obj.refresh_from_db()

    @admin.action(description="Resume the selected imports from their last committed batch", permissions=["add"])
    def resume(self, request, queryset):
        queued = 0
        for job in queryset.exclude(status=ImportJob.Status.DONE):
            imports.import_job_enqueue(job=job)
            queued += 1
        self.message_user(request, f"{queued} imports queued to resume.", messages.SUCCESS)

    def has_module_permission(self, request):
        return request.user.has_perm(IMPORT_PREFERENCES)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(IMPORT_PREFERENCES)

    def has_add_permission(self, request):
        return request.user.has_perm(IMPORT_PREFERENCES)

    def has_change_permission(self, request, obj=None):
        return False
