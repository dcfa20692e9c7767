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

# Each test process caches in its own memory, so figures cached in one run cannot leak into the
# next through a shared Redis. (Failed sign-ins are counted in the test database.)
CACHES = {**CACHES, "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}  # noqa: F405

# Tests never run collectstatic: WhiteNoise finds each static file in its source directory when it
# is asked for, rather than warning on every request that STATIC_ROOT (var/test/staticfiles) is missing.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
