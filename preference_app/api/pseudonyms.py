"""Stable pseudonymous annotator ids: what researchers see instead of user names.

The id is an HMAC of the user's primary key keyed with SECRET_KEY, so it is the same in every
export and response of one deployment, and cannot be reversed without the key.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from django.conf import settings
from django.contrib.auth import get_user_model

PREFIX = "ann-"


@lru_cache(maxsize=65536)
def _pseudonym(secret_key: str, user_id: int) -> str:
    digest = hmac.new(secret_key.encode(), f"annotator:{user_id}".encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:16]


def annotator_pseudonym(user_id: int | None) -> str | None:
    if user_id is None:
        return None
    # The key is part of the cache key, so tests that override SECRET_KEY get fresh ids.
    return _pseudonym(settings.SECRET_KEY, user_id)


def annotator_id_from_pseudonym(pseudonym: str) -> int | None:
    """The user behind a pseudonym, found by hashing every user id (users number in the thousands)."""
    if not pseudonym.startswith(PREFIX):
        return None
    for user_id in get_user_model().objects.values_list("id", flat=True).iterator():
        if annotator_pseudonym(user_id) == pseudonym:
            return user_id
    return None
