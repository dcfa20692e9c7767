"""REST endpoints: each validates its input with a serializer, calls one selector or service, and
answers with an output serializer (or a streamed file)."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from preference_app.annotation.selectors import shown_pair
from preference_app.annotation.services import assignment_judge_by_choice, assignment_next
from preference_app.api import formats, selectors, services
from preference_app.api.export import dataset_card, export_chunks, export_row_count
from preference_app.api.filters import (
    ComparisonFilterSerializer,
    JudgmentFilterSerializer,
    ModelVersionFilterSerializer,
    PreferenceFilters,
    PromptFilterSerializer,
    TrainingRoundFilterSerializer,
)
from preference_app.api.models import ExportJob
from preference_app.api.permissions import IMPORT_PREFERENCES, HasRolePermission
from preference_app.api.serializers import (
    AssignmentSerializer,
    ComparisonSerializer,
    ExportJobSerializer,
    ExportQuerySerializer,
    ImportJobCreateSerializer,
    ImportJobSerializer,
    JudgmentCreateSerializer,
    JudgmentSerializer,
    ModelVersionSerializer,
    PromptCreateSerializer,
    PromptSerializer,
    TrainingRoundSerializer,
)
from preference_app.core.models import Prompt
from preference_app.core.services import InvalidInput, prompt_create
from preference_app.core.views import LOCKED_OUT
from preference_app.rounds.services import round_start

EXPORT = "core.export_preferences"


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class _ApiView:
    """Shared settings: role permissions and pagination."""

    permission_classes = [HasRolePermission]
    pagination_class = Pagination
    required_permissions: dict[str, tuple[str, ...]] = {}


def _validated(serializer_class, data, **kwargs):
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer


def _invalid(error: InvalidInput) -> ValidationError:
    return ValidationError({"detail": str(error)})


@extend_schema(tags=["prompts"])
class PromptListView(_ApiView, generics.ListAPIView):
    required_permissions = {"GET": ("core.view_prompt",), "POST": ("core.add_prompt",)}
    serializer_class = PromptSerializer

    def get_queryset(self):
        return selectors.prompt_list(**_validated(PromptFilterSerializer, self.request.query_params).validated_data)

    @extend_schema(parameters=[PromptFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=PromptCreateSerializer, responses={200: PromptSerializer, 201: PromptSerializer})
    def post(self, request):
        """Add a prompt; the same text again returns the stored prompt with status 200."""
        data = _validated(PromptCreateSerializer, request.data).validated_data
        try:
            prompt, created = prompt_create(
                text=data["text"], tags=data.get("tags"), source=Prompt.Source.ANNOTATOR, created_by=request.user
            )
        except InvalidInput as error:
            raise _invalid(error) from None
        return Response(PromptSerializer(prompt).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@extend_schema(tags=["prompts"])
class PromptDetailView(_ApiView, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_prompt",)}
    serializer_class = PromptSerializer
    queryset = Prompt.objects.all()


@extend_schema(tags=["comparisons"])
class ComparisonListView(_ApiView, generics.ListAPIView):
    required_permissions = {"GET": ("core.view_comparison",)}
    serializer_class = ComparisonSerializer

    def get_queryset(self):
        query = _validated(ComparisonFilterSerializer, self.request.query_params)
        return selectors.comparison_list(filters=query.to_filters(), ordering=query.validated_data.get("ordering"))

    @extend_schema(parameters=[ComparisonFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


@extend_schema(tags=["comparisons"])
class ComparisonDetailView(_ApiView, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_comparison",)}
    serializer_class = ComparisonSerializer

    def get_queryset(self):
        return selectors.comparison_list(filters=PreferenceFilters())


@extend_schema(tags=["judgments"])
class JudgmentListView(_ApiView, generics.ListAPIView):
    """Researchers and admins read every judgment; annotators read and write their own."""

    required_permissions = {"GET": ("core.view_judgment", "core.add_judgment"), "POST": ("core.add_judgment",)}
    serializer_class = JudgmentSerializer

    def get_queryset(self):
        query = _validated(JudgmentFilterSerializer, self.request.query_params)
        return selectors.judgment_list(
            user=self.request.user, filters=query.to_filters(), ordering=query.validated_data.get("ordering")
        )

    @extend_schema(parameters=[JudgmentFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=JudgmentCreateSerializer, responses={200: JudgmentSerializer, 201: JudgmentSerializer})
    def post(self, request):
        """Judge a comparison leased to the requesting annotator (POST /api/assignments/next/); a
        repeated submit returns the first judgment (200)."""
        data = _validated(JudgmentCreateSerializer, request.data).validated_data
        try:
            outcome = assignment_judge_by_choice(annotator=request.user, comparison_id=data.pop("comparison"), **data)
        except InvalidInput as error:
            raise _invalid(error) from None
        return Response(
            JudgmentSerializer(outcome.judgment).data,
            status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK,
        )


@extend_schema(tags=["judgments"])
class AssignmentNextView(_ApiView, generics.GenericAPIView):
    """Lease the next comparison to judge, as the annotation page does: the same queue, overlap
    targets and lease time. Asking again while a lease is open returns the same comparison."""

    required_permissions = {"POST": ("core.add_judgment",)}
    serializer_class = AssignmentSerializer

    @extend_schema(request=None, responses={200: AssignmentSerializer, 204: None})
    def post(self, request):
        assignment = assignment_next(annotator=request.user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        pair = shown_pair(assignment=assignment)
        return Response(AssignmentSerializer({
            "assignment": assignment,
            "comparison": pair.comparison,
            "messages": [{"role": turn.role, "content": turn.text} for turn in pair.context],
        }).data)


@extend_schema(tags=["judgments"])
class JudgmentDetailView(_ApiView, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_judgment", "core.add_judgment")}
    serializer_class = JudgmentSerializer

    def get_queryset(self):
        return selectors.judgment_list(user=self.request.user, filters=PreferenceFilters())


@extend_schema(tags=["rounds"])
class TrainingRoundListView(_ApiView, generics.ListAPIView):
    required_permissions = {"GET": ("core.view_traininground",), "POST": ("core.start_round",)}
    serializer_class = TrainingRoundSerializer

    def get_queryset(self):
        return selectors.training_round_list(
            **_validated(TrainingRoundFilterSerializer, self.request.query_params).validated_data
        )

    @extend_schema(parameters=[TrainingRoundFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: TrainingRoundSerializer})
    def post(self, request):
        """Start a round, as the dashboard's form does: an object of round settings (names as in a
        round's `config`); those left out take their defaults. The same bounds apply."""
        if not isinstance(request.data, dict):
            raise ValidationError({"detail": "Send a JSON object of round settings."})
        try:
            training_round = round_start(settings_values=dict(request.data.items()), started_by=request.user)
        except InvalidInput as error:
            raise _invalid(error) from None
        return Response(self.get_serializer(training_round).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["rounds"])
class TrainingRoundDetailView(_ApiView, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_traininground",)}
    serializer_class = TrainingRoundSerializer

    def get_queryset(self):
        return selectors.training_round_list()


@extend_schema(tags=["model versions"])
class ModelVersionListView(_ApiView, generics.ListAPIView):
    required_permissions = {"GET": ("core.view_modelversion",)}
    serializer_class = ModelVersionSerializer

    def get_queryset(self):
        return selectors.model_version_list(
            **_validated(ModelVersionFilterSerializer, self.request.query_params).validated_data
        )

    @extend_schema(parameters=[ModelVersionFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


@extend_schema(tags=["model versions"])
class ModelVersionDetailView(_ApiView, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_modelversion",)}
    serializer_class = ModelVersionSerializer

    def get_queryset(self):
        return selectors.model_version_list()


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
class ExportView(_ApiView, APIView):
    """Stream a dataset: rows are read in chunks and sent as they are written, so memory stays flat."""

    required_permissions = {"GET": (EXPORT,)}

    @extend_schema(parameters=[ExportQuerySerializer], responses=_FILE_RESPONSES)
    def get(self, request):
        query = _validated(ExportQuerySerializer, request.query_params).to_query()
        response = StreamingHttpResponse(export_chunks(query), content_type=formats.CONTENT_TYPES[query.file_format])
        return _attachment(response, query.data_file_name)


@extend_schema(tags=["export"])
class ExportCardView(_ApiView, APIView):
    """The dataset card (README.md) of the export the same parameters select."""

    required_permissions = {"GET": (EXPORT,)}

    @extend_schema(parameters=[ExportQuerySerializer], responses=_CARD_RESPONSES)
    def get(self, request):
        query = _validated(ExportQuerySerializer, request.query_params).to_query()
        card = dataset_card(
            query, statistics=selectors.agreement_statistics(filters=query.filters), rows=export_row_count(query)
        )
        return _attachment(HttpResponse(card, content_type="text/markdown; charset=utf-8"), "README.md")


@extend_schema(tags=["export"])
class ExportJobListView(_ApiView, generics.ListAPIView):
    """Exports too large for one request: a Celery worker writes them; the requester downloads them."""

    required_permissions = {"GET": (EXPORT,), "POST": (EXPORT,)}
    serializer_class = ExportJobSerializer

    def get_queryset(self):
        return selectors.export_job_list(user=self.request.user)

    @extend_schema(request=ExportQuerySerializer, responses={202: ExportJobSerializer})
    def post(self, request):
        query = _validated(ExportQuerySerializer, request.data).to_query()
        job = services.export_job_create(user=request.user, query=query)
        return Response(ExportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["export"])
class ExportJobDetailView(_ApiView, generics.RetrieveAPIView):
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
class ExportJobDataView(_ApiView, APIView):
    required_permissions = {"GET": (EXPORT,)}

    @extend_schema(responses=_FILE_RESPONSES)
    def get(self, request, pk):
        job = _finished_job(request, pk)
        path = services.export_job_file(job=job, name=job.data_file_name)
        return FileResponse(path.open("rb"), as_attachment=True, filename=job.data_file_name)


@extend_schema(tags=["export"])
class ExportJobCardView(_ApiView, APIView):
    required_permissions = {"GET": (EXPORT,)}

    @extend_schema(responses=_CARD_RESPONSES)
    def get(self, request, pk):
        job = _finished_job(request, pk)
        path = services.export_job_file(job=job, name="README.md")
        return FileResponse(path.open("rb"), as_attachment=True, filename="README.md", content_type="text/markdown")


@extend_schema(tags=["import"])
class ImportJobListView(_ApiView, generics.ListAPIView):
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
        data = _validated(ImportJobCreateSerializer, request.data).validated_data
        try:
            job = services.import_job_upload(
                user=request.user, upload=data["file"], file_format=data["file_format"], strength=data["strength"]
            )
        except InvalidInput as error:
            raise _invalid(error) from None
        return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(tags=["import"])
class ImportJobDetailView(_ApiView, generics.RetrieveAPIView):
    required_permissions = {"GET": (IMPORT_PREFERENCES,)}
    serializer_class = ImportJobSerializer

    def get_queryset(self):
        return selectors.import_job_list(user=self.request.user)


@extend_schema(tags=["import"])
class ImportJobResumeView(_ApiView, APIView):
    """Queue an unfinished import again (its worker was lost, say); it continues from its last batch."""

    required_permissions = {"POST": (IMPORT_PREFERENCES,)}

    @extend_schema(request=None, responses={202: ImportJobSerializer})
    def post(self, request, pk):
        job = get_object_or_404(selectors.import_job_list(user=request.user), pk=pk)
        try:
            services.import_job_enqueue(job=job)
        except InvalidInput as error:
            raise _invalid(error) from None
        return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class TokenView(ObtainAuthToken):
    """DRF's token endpoint under the same sign-in limit as the login page.

    The authentication backend counts the attempt (core/auth.py); this view only says why it was refused.
    """

    # ObtainAuthToken names DRF's own parsers; the project's refuse deeply nested JSON with a 400.
    parser_classes = api_settings.DEFAULT_PARSER_CLASSES

    def post(self, request, *args, **kwargs):
        if not isinstance(request.data, dict):
            # A JSON list, string, number or null: there is no user name to read, and DRF's
            # serializer would fail on it with a server error instead of saying what is wrong.
            return Response({"detail": "Send a JSON object with username and password."},
                            status=status.HTTP_400_BAD_REQUEST)
        return super().post(request, *args, **kwargs)

    def handle_exception(self, exc):
        if isinstance(exc, ValidationError) and getattr(self.request, "login_limit_reached", False):
            minutes = max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)
            return Response({"detail": LOCKED_OUT.format(minutes=minutes)}, status=status.HTTP_429_TOO_MANY_REQUESTS)
        return super().handle_exception(exc)
