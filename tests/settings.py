"""Settings for the test suite: the app's own settings with var/ moved aside.

Keeping test state (SQLite test database, filesystem broker, models) under var/test means a test
run never touches the demo's database or queue.
"""

import os
from pathlib import Path

os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from preference_app.settings import *  # noqa: E402,F403

# Hashing passwords with the production hasher costs about 0.3 s a user; tests create hundreds.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Each test process counts failed logins in its own memory, so a lockout tested in one run cannot
# leak into the next through a shared Redis.
CACHES = {**CACHES, "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}  # noqa: F405
