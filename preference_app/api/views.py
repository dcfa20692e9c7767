"""REST endpoints of the read API, judgments, assignments, rounds and sign-in tokens: each validates
its input with a serializer, calls one selector or service, and answers with an output serializer."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.settings import api_settings

from preference_app.annotation.selectors import shown_pair
from preference_app.annotation.services import assignment_judge_by_choice, assignment_next
from preference_app.api import selectors
from preference_app.api.filters import (
    ComparisonFilterSerializer,
    JudgmentFilterSerializer,
    ModelVersionFilterSerializer,
    PreferenceFilters,
    PromptFilterSerializer,
    TrainingRoundFilterSerializer,
)
from preference_app.api.serializers import (
    AssignmentSerializer,
    ComparisonSerializer,
    JudgmentCreateSerializer,
    JudgmentSerializer,
    ModelVersionSerializer,
    PromptCreateSerializer,
    PromptSerializer,
    TrainingRoundSerializer,
)
from preference_app.api.view_base import ApiViewMixin, invalid, validated
from preference_app.core.errors import InvalidInput
from preference_app.core.models import Prompt
from preference_app.core.prompts import prompt_create
from preference_app.core.views import LOCKED_OUT
from preference_app.rounds.services import round_start


@extend_schema(tags=["prompts"])
class PromptListView(ApiViewMixin, generics.ListAPIView):
    required_permissions = {"GET": ("core.view_prompt",), "POST": ("core.add_prompt",)}
    serializer_class = PromptSerializer

    def get_queryset(self):
        return selectors.prompt_list(**validated(PromptFilterSerializer, self.request.query_params).validated_data)

    @extend_schema(parameters=[PromptFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=PromptCreateSerializer, responses={200: PromptSerializer, 201: PromptSerializer})
    def post(self, request):
        """Add a prompt; the same text again returns the stored prompt with status 200."""
        data = validated(PromptCreateSerializer, request.data).validated_data
        try:
            prompt, created = prompt_create(
                text=data["text"], tags=data.get("tags"), source=Prompt.Source.ANNOTATOR, created_by=request.user
            )
        except InvalidInput as error:
            raise invalid(error) from None
        return Response(PromptSerializer(prompt).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@extend_schema(tags=["prompts"])
class PromptDetailView(ApiViewMixin, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_prompt",)}
    serializer_class = PromptSerializer
    queryset = Prompt.objects.all()


@extend_schema(tags=["comparisons"])
class ComparisonListView(ApiViewMixin, generics.ListAPIView):
    required_permissions = {"GET": ("core.view_comparison",)}
    serializer_class = ComparisonSerializer

    def get_queryset(self):
        query = validated(ComparisonFilterSerializer, self.request.query_params)
        return selectors.comparison_list(filters=query.to_filters(), ordering=query.validated_data.get("ordering"))

    @extend_schema(parameters=[ComparisonFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


@extend_schema(tags=["comparisons"])
class ComparisonDetailView(ApiViewMixin, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_comparison",)}
    serializer_class = ComparisonSerializer

    def get_queryset(self):
        return selectors.comparison_list(filters=PreferenceFilters())


@extend_schema(tags=["judgments"])
class JudgmentListView(ApiViewMixin, generics.ListAPIView):
    """Researchers and admins read every judgment; annotators read and write their own."""

    required_permissions = {"GET": ("core.view_judgment", "core.add_judgment"), "POST": ("core.add_judgment",)}
    serializer_class = JudgmentSerializer

    def get_queryset(self):
        query = validated(JudgmentFilterSerializer, self.request.query_params)
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
        data = validated(JudgmentCreateSerializer, request.data).validated_data
        try:
            outcome = assignment_judge_by_choice(annotator=request.user, comparison_id=data.pop("comparison"), **data)
        except InvalidInput as error:
            raise invalid(error) from None
        return Response(
            JudgmentSerializer(outcome.judgment).data,
            status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK,
        )


@extend_schema(tags=["judgments"])
class AssignmentNextView(ApiViewMixin, generics.GenericAPIView):
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
class JudgmentDetailView(ApiViewMixin, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_judgment", "core.add_judgment")}
    serializer_class = JudgmentSerializer

    def get_queryset(self):
        return selectors.judgment_list(user=self.request.user, filters=PreferenceFilters())


@extend_schema(tags=["rounds"])
class TrainingRoundListView(ApiViewMixin, generics.ListAPIView):
    required_permissions = {"GET": ("core.view_traininground",), "POST": ("core.start_round",)}
    serializer_class = TrainingRoundSerializer

    def get_queryset(self):
        return selectors.training_round_list(
            **validated(TrainingRoundFilterSerializer, self.request.query_params).validated_data
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
            raise invalid(error) from None
        return Response(self.get_serializer(training_round).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["rounds"])
class TrainingRoundDetailView(ApiViewMixin, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_traininground",)}
    serializer_class = TrainingRoundSerializer

    def get_queryset(self):
        return selectors.training_round_list()


@extend_schema(tags=["model versions"])
class ModelVersionListView(ApiViewMixin, generics.ListAPIView):
    required_permissions = {"GET": ("core.view_modelversion",)}
    serializer_class = ModelVersionSerializer

    def get_queryset(self):
        return selectors.model_version_list(
            **validated(ModelVersionFilterSerializer, self.request.query_params).validated_data
        )

    @extend_schema(parameters=[ModelVersionFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


@extend_schema(tags=["model versions"])
class ModelVersionDetailView(ApiViewMixin, generics.RetrieveAPIView):
    required_permissions = {"GET": ("core.view_modelversion",)}
    serializer_class = ModelVersionSerializer

    def get_queryset(self):
        return selectors.model_version_list()


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
