"""REST endpoints for data in bulk: streamed exports and dataset cards, export jobs and their files,
and import jobs (upload, progress, resume)."""

from __future__ import annotations

from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from preference_app.api import export_selectors, formats, imports, selectors, services
from preference_app.api.export import dataset_card, export_chunks, export_row_count
from preference_app.api.models import ExportJob
from preference_app.api.permissions import IMPORT_PREFERENCES
from preference_app.api.serializers import (
    ExportJobSerializer,
    ExportQuerySerializer,
    ImportJobCreateSerializer,
    ImportJobSerializer,
)
from preference_app.api.view_base import ApiViewMixin, invalid, validated
from preference_app.core.errors import InvalidInput

EXPORT = "core.export_preferences"


_FILE_RESPONSES = {
    (200, formats.CONTENT_TYPES[formats.JSONL]): OpenApiTypes.BINARY,
    (200, formats.CONTENT_TYPES[formats.CSV]): OpenApiTypes.BINARY,
    (200, formats.CONTENT_TYPES[formats.PARQUET]): OpenApiTypes.BINARY,
    400: OpenApiResponse(description="A parameter is invalid."),
}
_CARD_RESPONSES = {(200, "text/markdown"): OpenApiTypes.STR, 400: OpenApiResponse(description="A parameter is invalid.")}


def _attachment(response, file_name: str):
    response["Content-Disposition"] = f'attachment; filename="{file_name}"'
    return response


@extend_schema(tags=["export"])
class ExportView(ApiViewMixin, APIView):
    """Stream a dataset: rows are read in chunks and sent as they are written, so memory stays flat."""

    required_permissions = {"GET": (EXPORT,)}

    @extend_schema(parameters=[ExportQuerySerializer], responses=_FILE_RESPONSES)
    def get(self, request):
        query = validated(ExportQuerySerializer, request.query_params).to_query()
        response = StreamingHttpResponse(export_chunks(query), content_type=formats.CONTENT_TYPES[query.file_format])
        return _attachment(response, query.data_file_name)


@extend_schema(tags=["export"])
class ExportCardView(ApiViewMixin, APIView):
    """The dataset card (README.md) of the export the same parameters select."""

    required_permissions = {"GET": (EXPORT,)}

    @extend_schema(parameters=[ExportQuerySerializer], responses=_CARD_RESPONSES)
    def get(self, request):
        query = validated(ExportQuerySerializer, request.query_params).to_query()
        card = dataset_card(
            query, statistics=export_selectors.agreement_statistics(filters=query.filters), rows=export_row_count(query)
        )
        return _attachment(HttpResponse(card, content_type="text/markdown; charset=utf-8"), "README.md")


@extend_schema(tags=["export"])
class ExportJobListView(ApiViewMixin, generics.ListAPIView):
    """Exports too large for one request: a Celery worker writes them; the requester downloads them."""

    required_permissions = {"GET": (EXPORT,), "POST": (EXPORT,)}
    serializer_class = ExportJobSerializer

    def get_queryset(self):
        return selectors.export_job_list(user=self.request.user)

    @extend_schema(request=ExportQuerySerializer, responses={202: ExportJobSerializer})
    def post(self, request):
        query = validated(ExportQuerySerializer, request.data).to_query()
        job = services.export_job_create(user=request.user, query=query)
        return Response(ExportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["export"])
class ExportJobDetailView(ApiViewMixin, generics.RetrieveAPIView):
    required_permissions = {"GET": (EXPORT,)}
    serializer_class = ExportJobSerializer

    def get_queryset(self):
        return selectors.export_job_list(user=self.request.user)


def _finished_job(request, pk) -> ExportJob:
    job = get_object_or_404(selectors.export_job_list(user=request.user), pk=pk)
    if job.status != ExportJob.Status.DONE:
        raise ValidationError({"detail": f"The export is {job.status}; its files are there once it is done."})
    return job


@extend_schema(tags=["export"])
class ExportJobDataView(ApiViewMixin, APIView):
    required_permissions = {"GET": (EXPORT,)}

    @extend_schema(responses=_FILE_RESPONSES)
    def get(self, request, pk):
        job = _finished_job(request, pk)
        path = services.export_job_file(job=job, name=job.data_file_name)
        return FileResponse(path.open("rb"), as_attachment=True, filename=job.data_file_name)


@extend_schema(tags=["export"])
class ExportJobCardView(ApiViewMixin, APIView):
    required_permissions = {"GET": (EXPORT,)}

    @extend_schema(responses=_CARD_RESPONSES)
    def get(self, request, pk):
        job = _finished_job(request, pk)
        path = services.export_job_file(job=job, name="README.md")
        return FileResponse(path.open("rb"), as_attachment=True, filename="README.md", content_type="text/markdown")


@extend_schema(tags=["import"])
class ImportJobListView(ApiViewMixin, generics.ListAPIView):
    """Import an HH-RLHF or TRL JSONL(.gz) file: upload it (multipart) and a Celery worker imports it
    in batches; GET the job for its progress and the lines it skipped, as "file:line: reason"."""

    required_permissions = {"GET": (IMPORT_PREFERENCES,), "POST": (IMPORT_PREFERENCES,)}
    serializer_class = ImportJobSerializer
    # A file upload is multipart: the file goes to disk as it arrives, never into one request body.
    parser_classes = [MultiPartParser]

    def get_queryset(self):
        return selectors.import_job_list(user=self.request.user)

    @extend_schema(request={"multipart/form-data": ImportJobCreateSerializer}, responses={202: ImportJobSerializer})
    def post(self, request):
        data = validated(ImportJobCreateSerializer, request.data).validated_data
        try:
            job = imports.import_job_upload(
                user=request.user, upload=data["file"], file_format=data["file_format"], strength=data["strength"]
            )
        except InvalidInput as error:
            raise invalid(error) from None
        return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["import"])
class ImportJobDetailView(ApiViewMixin, generics.RetrieveAPIView):
    required_permissions = {"GET": (IMPORT_PREFERENCES,)}
    serializer_class = ImportJobSerializer

    def get_queryset(self):
        return selectors.import_job_list(user=self.request.user)


@extend_schema(tags=["import"])
class ImportJobResumeView(ApiViewMixin, APIView):
    """Queue an unfinished import again (its worker was lost, say); it continues from its last batch."""

    required_permissions = {"POST": (IMPORT_PREFERENCES,)}

    @extend_schema(request=None, responses={202: ImportJobSerializer})
    def post(self, request, pk):
        job = get_object_or_404(selectors.import_job_list(user=request.user), pk=pk)
        try:
            imports.import_job_enqueue(job=job)
        except InvalidInput as error:
            raise invalid(error) from None
        return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
