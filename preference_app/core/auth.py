"""Authentication backend: Django's model backend, with the user's annotating role read alongside.

Every page of the annotation interface asks whether the signed-in user may annotate. The session
loads the user with one query on every request anyway; answering the role question in that same
query saves a second one per request, a few percent of a judgment's round trip.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.db.models import Exists, OuterRef

from preference_app.core import roles


class SessionUserBackend(ModelBackend):
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
