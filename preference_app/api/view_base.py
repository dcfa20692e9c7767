"""What every API view shares: role permissions, pagination, validated input and refusals as 400s."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination

from preference_app.api.permissions import HasRolePermission
from preference_app.core.errors import InvalidInput


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class ApiViewMixin:
    """Shared settings: role permissions and pagination."""

    permission_classes = [HasRolePermission]
    pagination_class = Pagination
    required_permissions: dict[str, tuple[str, ...]] = {}


def validated(serializer_class, data, **kwargs):
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer


def invalid(error: InvalidInput) -> ValidationError:
    return ValidationError({"detail": str(error)})
