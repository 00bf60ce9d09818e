"""Django settings for pfasync: everything comes from the environment (see .env.example)."""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env is a convenience for development; real environment variables win.
if (BASE_DIR / ".env").exists():
    env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set: copy .env.example to .env (make .env does it) or export it."
    )
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "mirror",
    # Before django_q: synclog's `qcluster` command wraps django_q's with graceful sync shutdown.
    "synclog",
    "django_q",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, dashboard, API docs) from the app server itself: no CDN, no extra server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pfasync.urls"

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
    },
]

WSGI_APPLICATION = "pfasync.wsgi.application"

# Unset DATABASE_URL means a SQLite file, so a newcomer needs nothing installed.
DATABASES = {
    "default": env.db_url_config(env.str("DATABASE_URL", default="") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a sync writes; the timeout rides out short write locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    # Tests get a file too: Django's default in-memory shared-cache test database locks whole
    # tables instead of waiting, which is not how the service behaves on SQLite.
    DATABASES["default"]["TEST"] = {"NAME": f"{DATABASES['default']['NAME']}.test"}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Static files are served from the apps' static folders, so no collectstatic step is needed to
# start; set DJANGO_STATIC_ROOT and run collectstatic to serve a collected copy instead.
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default="") or None
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- pfasync ---------------------------------------------------------------------------------

# Fernet key(s) that encrypt PEMS secrets at rest. Several keys, comma-separated, allow rotation:
# the first encrypts, all decrypt. Validated here so a bad key stops start-up, not a sync.
PFASYNC_ENCRYPTION_KEYS = env.list("PFASYNC_ENCRYPTION_KEY", default=[])
if not PFASYNC_ENCRYPTION_KEYS:
    raise ImproperlyConfigured(
        "PFASYNC_ENCRYPTION_KEY is not set: it encrypts the PEMS secrets at rest. Generate one with "
        "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
    )

SYNC_BATCH_SIZE = env.int("SYNC_BATCH_SIZE", default=10000)
SYNC_MAX_KEPT_ERRORS = env.int("SYNC_MAX_KEPT_ERRORS", default=1000)
# Incremental reads go back this far before the watermark: PEMS times have minute precision and
# no offset, and a save can land on a page already read.
SYNC_INCREMENTAL_LOOKBACK_MINUTES = env.int("SYNC_INCREMENTAL_LOOKBACK_MINUTES", default=10)
# A complete full read that would mark more than this percentage of an organization's records
# deleted marks none and says so: a permission change or a broken filter can make a grid look empty.
SYNC_DELETE_GUARD_PERCENT = env.float("SYNC_DELETE_GUARD_PERCENT", default=10.0)
# Records marked deleted are purged for good after this many days (by the worker and `purge_deleted`).
SYNC_DELETED_RETENTION_DAYS = env.int("SYNC_DELETED_RETENTION_DAYS", default=30)
if not 0 <= SYNC_DELETE_GUARD_PERCENT <= 100:
    raise ImproperlyConfigured(f"SYNC_DELETE_GUARD_PERCENT is {SYNC_DELETE_GUARD_PERCENT}: it must be 0 to 100.")
if SYNC_DELETED_RETENTION_DAYS < 0:
    raise ImproperlyConfigured(f"SYNC_DELETED_RETENTION_DAYS is {SYNC_DELETED_RETENTION_DAYS}: it cannot be negative.")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "mirror": {"level": LOG_LEVEL},
        "synclog": {"level": LOG_LEVEL},
        "django-q": {"level": LOG_LEVEL},
    },
}

# --- Background sync worker (django-q2) -------------------------------------------------------

ENABLE_SYNC_WORKER = env.bool("ENABLE_SYNC_WORKER", default=False)
SYNC_INTERVAL = env.str("SYNC_INTERVAL", default="*/15 * * * *")
# Cron expression of the scheduled full reads (which also detect deletions); empty: none.
SYNC_FULL_INTERVAL = env.str("SYNC_FULL_INTERVAL", default="0 3 * * *")
SYNC_ORGS = [code.strip().upper() for code in env.list("SYNC_ORGS", default=[]) if code.strip()]
# A running sync whose heartbeat is older than this is taken to have lost its worker.
SYNC_LEASE_SECONDS = env.int("SYNC_LEASE_SECONDS", default=600)
# Hard ceiling on one sync task; the worker process is killed past it (and the lease then frees the org).
SYNC_TASK_TIMEOUT = env.int("SYNC_TASK_TIMEOUT", default=4 * 3600)
REDIS_URL = env.str("REDIS_URL", default="")

Q_CLUSTER = {
    "name": "pfasync",
    "workers": env.int("SYNC_WORKERS", default=2),
    # A sync may legitimately run for hours on a million records; past this the worker is killed.
    "timeout": SYNC_TASK_TIMEOUT,
    # ORM/Redis brokers hand a task out again after `retry` seconds unless acknowledged; it must
    # exceed `timeout` or a slow sync would be started twice.
    "retry": SYNC_TASK_TIMEOUT + 600,
    # A failed sync is recorded in pfa_sync_log and retried by the next tick, never by the queue.
    "max_attempts": 1,
    # Acknowledge failed tasks too, so a failing sync is not handed out forever.
    "ack_failures": True,
    # After downtime run the next tick only, not one per missed interval.
    "catch_up": False,
    "save_limit": 1000,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- REST API ---------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework_simplejwt.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "synclog.api.exception_handler",
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=30)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=1)),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pfasync API",
    "DESCRIPTION": "Trigger and follow PEMS-to-mirror syncs, and browse organizations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page loads Swagger UI from this server (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
