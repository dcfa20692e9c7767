"""Sign-in attempts counted per client address and user name, to slow down password guessing.

Every attempt is counted before its password is checked, in a database row locked for the count
(core.models.LoginAttempts), so parallel guesses queue on the lock and at most LOGIN_FAILURE_LIMIT
passwords are ever checked, whichever web process or thread receives them. A cache counter that was
read, then checked, then incremented let 40 parallel guesses check 8 to 15 passwords against a limit
of 5; django-axes, which counts a failure after the check, let through 8 on the token endpoint and 29
on the login page in the same test. A successful sign-in deletes the row; otherwise the count
lapses LOGIN_LOCKOUT_SECONDS after the last attempt.

Keying by both address and name means one attacker cannot lock a colleague out from another
address, and one address cannot try many passwords for one account. Behind reverse proxies the
address is read from X-Forwarded-For (see client_address).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from preference_app.core.models import LoginAttempts


def client_address(request: HttpRequest) -> str:
    """The address of the client as the last of TRUSTED_PROXY_COUNT proxies saw it.

    Each proxy appends the address it received the request from to X-Forwarded-For, so the entry
    TRUSTED_PROXY_COUNT places from the right was written by our outermost proxy; anything left of
    it came from the client and may be forged. Without trusted proxies the header is ignored, as a
    client talking to gunicorn directly could write any address into it. (django-ipware's proxy
    count instead counts proxy addresses inside the header, which a single nginx does not write.)
    """
    remote = request.META.get("REMOTE_ADDR", "")
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return remote
    forwarded = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if entry.strip()]
    # Fewer entries than proxies: the request did not pass through all of them, so only the
    # connection's own address can be trusted.
    return forwarded[-count] if len(forwarded) >= count else remote


def _key(address: str, username: str) -> str:
    return hashlib.sha256(f"{address}\n{username.strip().lower()}".encode()).hexdigest()


def login_attempt_reserve(*, address: str, username: str) -> bool:
    """Count one sign-in attempt; False, counting nothing, when the limit is already reached."""
    now = timezone.now()
    with transaction.atomic():
        # get_or_create on a locking queryset: when two first attempts insert at once, the loser's
        # unique-key error makes Django read the winner's row, locking it as well.
        row, _ = LoginAttempts.objects.select_for_update().get_or_create(
            key=_key(address, username), defaults={"last_attempt": now}
        )
        if row.last_attempt < now - timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS):
            row.attempts = 0
        if row.attempts >= settings.LOGIN_FAILURE_LIMIT:
            return False
        row.attempts += 1
        row.last_attempt = now
        row.save(update_fields=["attempts", "last_attempt"])
    return True


def login_attempts_clear(*, address: str, username: str) -> None:
    LoginAttempts.objects.filter(key=_key(address, username)).delete()
