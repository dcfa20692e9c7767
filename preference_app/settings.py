"""Django settings, read from the environment.

Every value has a default that lets a fresh checkout run (SQLite and a filesystem message broker
under `var/`); production sets DEBUG=false and then must provide SECRET_KEY and ALLOWED_HOSTS.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from preference_app.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", True)


def _secret_key() -> str:
    """Use SECRET_KEY when set; in development, generate one once and keep it in var/.

    Production (DEBUG off) must set it explicitly: a key generated on one host would differ from
    another host's and would sign sessions nobody else can verify.
    """
    configured = env_str("SECRET_KEY")
    if configured:
        return configured
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off. Generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off (comma-separated host names).")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "csp",
    "preference_app.core",
    "preference_app.annotation",
    "preference_app.api",
    "preference_app.rounds",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "preference_app.core.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "preference_app.urls"
WSGI_APPLICATION = "preference_app.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes share the file; a busy timeout lets one wait for the other's write
    # instead of failing with "database is locked". The test database is a file too, so that a
    # Celery worker started by the tests can open it. Transactions begin IMMEDIATE: a deferred one
    # that reads and then writes fails at once with "database is locked" when another connection
    # writes meanwhile (the busy timeout cannot help an upgrade), which turned two annotators
    # asking for work at the same moment into an error page.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_db.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Parameters travel apart from the SQL, so psycopg can prepare a statement the second time it
    # is run and PostgreSQL stops planning it afresh: the annotation pages run the same dozen
    # statements on every request. (Prepared statements need a session-level connection; put
    # PgBouncer in transaction mode in front and this must go.)
    DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 2}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The model backend, reading the annotating role with the user (see core/auth.py).
AUTHENTICATION_BACKENDS = ["preference_app.core.auth.SessionUserBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

# Production hardening: on whenever DEBUG is off, so `manage.py check --deploy` is clean there.
# SECURE_SSL_REDIRECT can be turned off where a proxy in front already terminates and redirects TLS.
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# Content-Security-Policy (django-csp 4): scripts, styles and everything else only from the app's own
# origin, so a prompt or reply that slipped past escaping still could not run. No page has inline
# scripts, styles or event handlers; htmx's indicator style lives in app.css (htmx-config in base.html).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Only a proxy in front of gunicorn may say the client used HTTPS: where gunicorn is reached directly
# (docker-compose.yml), any client could send X-Forwarded-Proto and be taken for a secure one.
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    # DRF's defaults, with a JSON parser that refuses deeply nested bodies (400, not a server error).
    "DEFAULT_PARSER_CLASSES": [
        "preference_app.api.parsers.DepthLimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Preference collection API",
    "DESCRIPTION": "Pairwise human preferences, training rounds and model versions.",
    "VERSION": "1.0.0",
    # Swagger UI is served from the app's own static files: no CDN is reachable on air-gapped hosts.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "preference_app.api.schema.document_error_responses",
    ],
    # Export and import jobs share their status choices, and "file_format" means an export's file
    # type or an import's dataset format: named here, so the schema has no hash-named enums.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "preference_app.api.models.JobStatus",
        "ImportFormatEnum": "preference_app.api.models.ImportFormat",
    },
}

# Celery. Without REDIS_URL or CELERY_BROKER_URL the broker is kombu's filesystem transport in
# var/broker, so the demo needs no server; results always go to the database.
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for folder in ("queue", "processed", "control"):
        (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # The exchange tables too: kombu's default is ./control in the working directory, which put
        # broker state in the repository and let separate test runs see each other's workers.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # A task that runs longer than the visibility timeout would be redelivered to a second worker;
    # training can take hours, so the timeout is set above the longest task time limit.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"preference_app.*.tasks.train_*": {"queue": "training"}}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 4 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# A running round step refreshes its claim every ROUND_HEARTBEAT_SECONDS; a claim left unrefreshed
# for ROUND_STALL_SECONDS belongs to a worker that was killed, and the round is marked failed.
ROUND_HEARTBEAT_SECONDS = env_int("ROUND_HEARTBEAT_SECONDS", 30)
ROUND_STALL_SECONDS = env_int("ROUND_STALL_SECONDS", 300)
if ROUND_STALL_SECONDS < 3 * ROUND_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("ROUND_STALL_SECONDS must be at least three ROUND_HEARTBEAT_SECONDS, or a slow "
                               "database write would make a live step look dead.")
# The sweeper (celery beat, rounds/sweeper.py) runs every SWEEPER_PERIOD_SECONDS, whether or not
# anyone opens a page: it sends again the task of a generation batch or round step left unclaimed
# for WORK_REQUEUE_SECONDS (its message was lost, say with a Redis restarted without persistence)
# and fails claims whose heartbeat stopped. Its messages expire after one period, so sweeps queued
# behind a busy worker do not pile up.
SWEEPER_PERIOD_SECONDS = env_int("SWEEPER_PERIOD_SECONDS", 60)
WORK_REQUEUE_SECONDS = env_int("WORK_REQUEUE_SECONDS", 120)
if SWEEPER_PERIOD_SECONDS < 1 or WORK_REQUEUE_SECONDS < 1:
    raise ImproperlyConfigured("SWEEPER_PERIOD_SECONDS and WORK_REQUEUE_SECONDS must be positive.")
CELERY_BEAT_SCHEDULE = {
    "stranded-work-recover": {
        "task": "preference_app.rounds.tasks.stranded_work_recover",
        "schedule": SWEEPER_PERIOD_SECONDS,
        "options": {"expires": SWEEPER_PERIOD_SECONDS},
    },
}

# Request bodies and imported files are size-limited, so one oversized upload or import cannot
# exhaust memory; the limit is named in the error message.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 200 * 1024 * 1024)
# Imports are read as a stream: a small .gz can decompress to gigabytes, so the decompressed size
# is limited too, and a line longer than IMPORT_MAX_LINE_BYTES is reported and skipped without ever
# being held in memory whole.
IMPORT_MAX_DECOMPRESSED_BYTES = env_int("IMPORT_MAX_DECOMPRESSED_BYTES", 2 * 1024 * 1024 * 1024)
IMPORT_MAX_LINE_BYTES = env_int("IMPORT_MAX_LINE_BYTES", 4 * 1024 * 1024)

# The default cache is shared by every web process when Redis is configured. The
# "process" cache holds figures each process may remember for itself, so reading them costs no
# round trip and an outage of Redis cannot take the annotation pages down with it.
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "preference_app",
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "default"}
    ),
    "process": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "process"},
}

# Sign-in attempts allowed per client address and user name before sign-in refuses for a while,
# counted in the database (core/login_limits.py).
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 300)
# How many reverse proxies in front of gunicorn append to X-Forwarded-For; the client's address is
# the entry that many places from the right. 0 (gunicorn exposed directly) ignores the header,
# which a client could otherwise forge.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

# The chat model that writes candidates. The default is the bundled SmolLM2-135M-Instruct,
# converted once by `manage.py prepare_model` into MODELS_DIR.
MODEL_NAME = env_str("MODEL_NAME", "SmolLM2-135M-Instruct")
MODELS_DIR = Path(env_str("MODELS_DIR", str(VAR_DIR / "models")))
# The most tokens each live chat reply may have; a reply cut there is marked on the page.
CHAT_MAX_NEW_TOKENS = env_int("CHAT_MAX_NEW_TOKENS", 160)
TRAINING_DEVICE = env_str("TRAINING_DEVICE", "")
# Threads each worker process gives torch. The Procfile and docker-compose.yml run two workers
# beside each other (live chat, and batch work with training), so by default each takes half the
# host's cores: with torch's own default every worker takes them all, and on a busy host the
# oversubscribed threads made generation about five times slower than one thread each. 0 leaves
# torch's default.
WORKER_TORCH_THREADS = env_int("WORKER_TORCH_THREADS", max(1, (os.cpu_count() or 2) // 2))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
