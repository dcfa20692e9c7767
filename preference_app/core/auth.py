"""Authentication backend: Django's model backend, limited in sign-in attempts, with the user's
annotating role read alongside.

The limit lives here because every way in checks its password through this backend: the login
page, the Django admin's form and the API's token endpoint alike, so all of them share one count.

Every page of the annotation interface asks whether the signed-in user may annotate. The session
loads the user with one query on every request anyway; answering the role question in that same
query saves a second one per request, a few percent of a judgment's round trip.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef

from preference_app.core import login_limits, roles


class SessionUserBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        """Check the password only while the client's attempts for this name are under the limit.

        When the limit is reached, PermissionDenied stops Django's authenticate() before any other
        backend is asked, and `request.login_limit_reached` tells the view to say why.
        """
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        address = login_limits.client_address(request) if request is not None else ""
        if not login_limits.login_attempt_reserve(address=address, username=str(username)):
            if request is not None:
                request.login_limit_reached = True
            raise PermissionDenied
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            login_limits.login_attempts_clear(address=address, username=str(username))
        return user

    def get_user(self, user_id):
        users = get_user_model()._default_manager.annotate(
            holds_annotating_role=Exists(
                Group.objects.filter(user=OuterRef("pk"), name__in=roles.ANNOTATING_ROLES)
            )
        )
        try:
            user = users.get(pk=user_id)
        except users.model.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None
