"""Failed sign-ins counted per client address and user name, to slow down password guessing.

The count lives in Django's cache for LOGIN_LOCKOUT_SECONDS after the last failure. Keying by both
address and name means one attacker cannot lock a colleague out from another address, and one
address cannot try many passwords for one account. The limiter fails open: if the cache cannot be
reached, sign-in works unthrottled (and says so in the log) rather than locking everyone out.
"""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)


def _key(address: str, username: str) -> str:
    digest = hashlib.sha256(f"{address}\n{username.strip().lower()}".encode()).hexdigest()
    return f"login-failures:{digest}"


def login_allowed(*, address: str, username: str) -> bool:
    """False while this address has too many recent failed sign-ins for this user name."""
    try:
        failures = cache.get(_key(address, username), 0)
    except Exception:  # Any cache backend error: see the module docstring on failing open.
        logger.exception("The login limiter could not read the cache; allowing the attempt.")
        return True
    return failures < settings.LOGIN_FAILURE_LIMIT


def login_failure_record(*, address: str, username: str) -> None:
    key = _key(address, username)
    try:
        # add() is a no-op when the key exists, so the first failure starts the count atomically.
        cache.add(key, 0, timeout=settings.LOGIN_LOCKOUT_SECONDS)
        cache.incr(key)
        cache.touch(key, timeout=settings.LOGIN_LOCKOUT_SECONDS)
    except ValueError:
        # The key expired between add() and incr(); this failure then starts a new count.
        cache.set(key, 1, timeout=settings.LOGIN_LOCKOUT_SECONDS)
    except Exception:
        logger.exception("The login limiter could not write the cache; this failure is not counted.")


def login_failures_clear(*, address: str, username: str) -> None:
    try:
        cache.delete(_key(address, username))
    except Exception:
        logger.exception("The login limiter could not clear the cache.")
