"""Django settings for pfasync: everything comes from the environment (see .env.example)."""

import secrets
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

# Production behind a TLS-terminating proxy: DJANGO_SECURE=true. Off by default so that
# `make run` works over plain http on a developer's machine.
if env.bool("DJANGO_SECURE", default=False):
    SECURE_SSL_REDIRECT = True
    # The proxy terminates TLS and says so in X-Forwarded-Proto (it must set or strip the header).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt",
    # Refresh tokens rotate and a used or revoked one is refused: its own tables.
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "mirror",
    # Before django_q: synclog's `qcluster` command wraps django_q's with graceful sync shutdown.
    "synclog",
    "django_q",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything that may answer: a browser's preflight is answered here, without a login.
    "corsheaders.middleware.CorsMiddleware",
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

# Production and CI: DATABASE_URL. Unset, a local machine runs on an embedded PostgreSQL server whose
# cluster is a project folder (.pgdata/, started on demand, see pfasync/embedded_db.py and decision 10);
# but only when asked for (the .env of `make .env` asks), so that a production start with the variable
# missing stops instead of writing to a local folder.
DATABASE_URL = env.str("DATABASE_URL", default="")
EMBEDDED_POSTGRES = not DATABASE_URL and (DEBUG or env.bool("PFASYNC_EMBEDDED_POSTGRES", default=False))
if not (DATABASE_URL or EMBEDDED_POSTGRES):
    raise ImproperlyConfigured(
        "DATABASE_URL is not set: pfasync runs on PostgreSQL, e.g. "
        "DATABASE_URL=postgres://user@host:5432/pfasync. For a local trial on an embedded PostgreSQL server "
        "(a .pgdata folder here, started on demand), set PFASYNC_EMBEDDED_POSTGRES=true (`make .env` does)."
    )
if EMBEDDED_POSTGRES:
    from pfasync.embedded_db import embedded_db_folder, embedded_db_settings, embedded_db_start

    PFASYNC_PGDATA = embedded_db_folder()
    embedded_db_start(pgdata=PFASYNC_PGDATA)
    DATABASES = {"default": embedded_db_settings(pgdata=PFASYNC_PGDATA)}
else:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
# The mirror's SQL (COPY, materialized views, triggers, partial indexes) is PostgreSQL's: another
# database would fail later, halfway through a migration or a sync.
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured(
        f"DATABASE_URL names {DATABASES['default']['ENGINE']}: pfasync runs on PostgreSQL only, e.g. "
        "DATABASE_URL=postgres://user@host:5432/pfasync, or unset with PFASYNC_EMBEDDED_POSTGRES=true for "
        "an embedded PostgreSQL server."
    )

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

# The PEMS credentials go to a connection's base URL: plain http:// is refused unless this is set
# (the PEMS simulator, used by the demo and the tests, speaks only http).
PEMS_ALLOW_HTTP = env.bool("PEMS_ALLOW_HTTP", default=False)

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
# Records a purge deletes per statement, each batch its own short transaction.
SYNC_PURGE_BATCH_SIZE = env.int("SYNC_PURGE_BATCH_SIZE", default=10_000)
if SYNC_PURGE_BATCH_SIZE < 1:
    raise ImproperlyConfigured(f"SYNC_PURGE_BATCH_SIZE is {SYNC_PURGE_BATCH_SIZE}: it must be at least 1.")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    # Every record that reaches the console is scrubbed of the PEMS secrets the process knows.
    "filters": {"scrub_secrets": {"()": "mirror.secrets.SecretScrubFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["scrub_secrets"]}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        # Django's own default handler for this logger is unfiltered (and doubles every line under DEBUG).
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
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
SYNC_ORGS = [code.strip() for code in env.list("SYNC_ORGS", default=[]) if code.strip()]
# A running sync whose heartbeat is older than this is taken to have lost its worker.
SYNC_LEASE_SECONDS = env.int("SYNC_LEASE_SECONDS", default=600)
# A running sync beats its heartbeat this often, from a thread of its own, also during a PEMS call.
SYNC_HEARTBEAT_SECONDS = env.int("SYNC_HEARTBEAT_SECONDS", default=15)
if SYNC_HEARTBEAT_SECONDS < 1 or SYNC_LEASE_SECONDS < 3 * SYNC_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        f"SYNC_LEASE_SECONDS ({SYNC_LEASE_SECONDS}) must be at least three heartbeats: 3 x SYNC_HEARTBEAT_SECONDS "
        f"({SYNC_HEARTBEAT_SECONDS}) = {3 * SYNC_HEARTBEAT_SECONDS}, so that one late beat never loses a live run."
    )
# A queued run whose task is in neither the broker nor a busy worker's hands this long after it was
# queued (a worker being free meanwhile) lost its task, and is failed (synclog.models.queued_runs_lost).
SYNC_QUEUE_LEASE_SECONDS = env.int("SYNC_QUEUE_LEASE_SECONDS", default=300)
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

# The key that signs the API's JWTs, apart from DJANGO_SECRET_KEY: rotating it ends every session
# of the API and nothing else. Required in production; a development server (DJANGO_DEBUG=true)
# without one signs with a random key of its own, so its tokens end when it restarts.
JWT_SIGNING_KEY = env.str("JWT_SIGNING_KEY", default="")
if not JWT_SIGNING_KEY and not DEBUG:
    raise ImproperlyConfigured(
        "JWT_SIGNING_KEY is not set: it signs the API's tokens, apart from DJANGO_SECRET_KEY. Generate one with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`, or let `python scripts/make_env.py "
        ".env.example .env` add one to .env; a development server (DJANGO_DEBUG=true) may go without."
    )
if JWT_SIGNING_KEY and (len(JWT_SIGNING_KEY) < 32 or JWT_SIGNING_KEY == SECRET_KEY):
    raise ImproperlyConfigured(
        "JWT_SIGNING_KEY must be at least 32 characters and differ from DJANGO_SECRET_KEY "
        f"(it has {len(JWT_SIGNING_KEY)} characters)."
    )
JWT_SIGNING_KEY = JWT_SIGNING_KEY or secrets.token_urlsafe(50)


def _throttle_rate(name: str, default: str) -> str:
    """A DRF throttle rate from the environment, checked here so a typo stops start-up, not a login."""
    rate = env.str(name, default=default)
    count, _, period = rate.partition("/")
    if not (count.isdigit() and int(count) > 0 and period in {"s", "sec", "m", "min", "h", "hour", "d", "day"}):
        raise ImproperlyConfigured(
            f"{name} is {rate!r}: it must be a count per period, e.g. 5/min (s, min, hour, day)."
        )
    return rate


# Failed logins allowed per username and per client address (a successful login is not counted).
LOGIN_THROTTLE_RATE = _throttle_rate("LOGIN_THROTTLE_RATE", "5/min")
LOGIN_ADDRESS_THROTTLE_RATE = _throttle_rate("LOGIN_ADDRESS_THROTTLE_RATE", "20/min")
# Reverse proxies in front of the API: the client address is the one the nearest of them saw
# (X-Forwarded-For); 0 takes the connection's own address, so a client cannot choose its own.
API_NUM_PROXIES = env.int("API_NUM_PROXIES", default=0)
# The OpenAPI schema (/api/schema/) and docs (/api/docs/) need a signed-in user unless this is true.
API_DOCS_PUBLIC = env.bool("API_DOCS_PUBLIC", default=False)
# The largest JSON body the API reads, in bytes (a larger one is a 413 before it is parsed).
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1_048_576)
if API_MAX_BODY_BYTES < 1024:
    raise ImproperlyConfigured(f"API_MAX_BODY_BYTES is {API_MAX_BODY_BYTES}: it must be at least 1024.")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["pfasync.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["pfasync.parsers.JsonParser"],
    "EXCEPTION_HANDLER": "pfasync.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"login_username": LOGIN_THROTTLE_RATE, "login_address": LOGIN_ADDRESS_THROTTLE_RATE},
    "NUM_PROXIES": API_NUM_PROXIES,
}
# Browser front ends on other origins (e.g. http://localhost:5173) that may call the API; empty: none.
# Only /api/ answers them; the default allowed headers include Authorization (the bearer token).
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=30)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=1)),
    "SIGNING_KEY": JWT_SIGNING_KEY,
    # Each refresh hands out a new refresh token and revokes the one used (logout revokes one too).
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pfasync API",
    "DESCRIPTION": "Trigger and follow PEMS-to-mirror syncs, and browse organizations.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies refuse unknown keys, and their schemas say so (additionalProperties: false).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "pfasync.api.schema_strict_bodies"],
    # Signed-in users only (a bearer token, or the admin's session in a browser), unless API_DOCS_PUBLIC.
    "SERVE_PERMISSIONS": ["pfasync.permissions.ApiDocsAccess"],
    "SERVE_AUTHENTICATION": [
        "pfasync.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # The docs page loads Swagger UI from this server (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Operations: health probes, metrics, structured logs, alerts (the ops app) ----------------

# /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; while it is unset, /metrics is a 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:
    raise ImproperlyConfigured(
        f"METRICS_TOKEN has {len(METRICS_TOKEN)} characters: use at least 24, e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`, or leave it empty to turn /metrics off."
    )
# The health probes come over plain http from inside the cluster: never redirect them to https
# (an orchestrator takes a redirect for a pass).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# plain: a line of text per record, for a terminal; json: one JSON object per line, for a log pipeline,
# with the run's run_id, batch_id, organization and direction inside a run. Both are scrubbed of secrets.
LOG_FORMAT = (env.str("LOG_FORMAT", default="") or "plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT is {LOG_FORMAT!r}: it must be plain or json.")
LOGGING["formatters"]["json"] = {"()": "pfasync.logs.JsonFormatter"}
LOGGING["filters"]["run_context"] = {"()": "pfasync.logs.RunContextFilter"}
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
LOGGING["handlers"]["console"]["filters"] = [*LOGGING["handlers"]["console"].get("filters", []), "run_context"]
LOGGING["loggers"]["ops"] = {"level": LOG_LEVEL}

# Alerts, checked on every tick of the worker: an organization whose newest completed read is older
# than SYNC_STALE_AFTER seconds (unset: three SYNC_INTERVALs), or whose reads failed
# SYNC_ALERT_AFTER_FAILURES times in a row; one alert as it enters the state, one as it recovers.
SYNC_STALE_AFTER = env.str("SYNC_STALE_AFTER", default="").strip()
if SYNC_STALE_AFTER and not SYNC_STALE_AFTER.isdigit():
    raise ImproperlyConfigured(f"SYNC_STALE_AFTER is {SYNC_STALE_AFTER!r}: it must be a number of seconds, or empty.")
SYNC_STALE_AFTER = int(SYNC_STALE_AFTER) if SYNC_STALE_AFTER else None
SYNC_ALERT_AFTER_FAILURES = env.int("SYNC_ALERT_AFTER_FAILURES", default=3)
SYNC_ALERT_EMAILS = [address.strip() for address in env.list("SYNC_ALERT_EMAILS", default=[]) if address.strip()]
SYNC_ALERT_WEBHOOK = env.str("SYNC_ALERT_WEBHOOK", default="")
if SYNC_STALE_AFTER is not None and SYNC_STALE_AFTER < 60:
    raise ImproperlyConfigured(f"SYNC_STALE_AFTER is {SYNC_STALE_AFTER}: it must be at least 60 seconds.")
if SYNC_ALERT_AFTER_FAILURES < 1:
    raise ImproperlyConfigured(f"SYNC_ALERT_AFTER_FAILURES is {SYNC_ALERT_AFTER_FAILURES}: it must be 1 or more.")
if SYNC_ALERT_WEBHOOK and not SYNC_ALERT_WEBHOOK.lower().startswith(("https://", "http://")):
    raise ImproperlyConfigured("SYNC_ALERT_WEBHOOK must be an http(s):// URL.")
# The alert e-mails go out through Django's mail settings, from EMAIL_URL
# (smtp://user:password@host:25, smtp+tls://...:587, smtp+ssl://...:465, consolemail://).
globals().update(env.email_url("EMAIL_URL", default="smtp://localhost:25"))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="pfasync@localhost")
