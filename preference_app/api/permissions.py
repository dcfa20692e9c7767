"""Role permissions per HTTP method, checked against the Django permissions of `core.roles`."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

# HEAD and OPTIONS read what GET reads.
_METHOD_ALIASES = {"HEAD": "GET", "OPTIONS": "GET"}


class HasRolePermission(BasePermission):
    """The view's `required_permissions` maps a method to permission names, any one of which suffices.

    A method missing from the map is allowed through here so that the view answers 405 for it.
    """

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        method = _METHOD_ALIASES.get(request.method, request.method)
        alternatives = view.required_permissions.get(method)
        if alternatives is None:
            return True
        return any(user.has_perm(permission) for permission in alternatives)


# Researchers and admins move datasets both ways, so importing takes the export permission: one
# permission for both keeps the roles, and the migration that creates them, as they are.
IMPORT_PREFERENCES = "core.export_preferences"
