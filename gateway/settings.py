"""All settings, read from the environment with django-environ.

With no environment at all CliRelay runs embedded: SQLite under ``data/``, an in-memory
channel layer, a local-memory cache and Celery tasks executed in-process. ``DATABASE_URL``
and ``REDIS_URL`` switch storage, cache, channel layer, Celery broker and shared counters
to real servers so that several gateway processes act as one.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import environ
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DATA_DIR = Path(env.str("CLIRELAY_DATA_DIR", default=str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _persisted_secret(name: str, make: str) -> str:
    """Return ``$name`` from the environment, else a value generated once into ``data/``.

    Generated secrets survive restarts; a multi-machine deployment must set them explicitly
    so that every process shares them.
    """
    value = env.str(name, default="")
    if value:
        return value
    path = DATA_DIR / name.lower()
    if path.exists():
        return path.read_text().strip()
    value = Fernet.generate_key().decode() if make == "fernet" else secrets.token_urlsafe(50)
    path.write_text(value)
    path.chmod(0o600)
    return value


SECRET_KEY = _persisted_secret("SECRET_KEY", "token")
CLIRELAY_ENCRYPTION_KEY = _persisted_secret("CLIRELAY_ENCRYPTION_KEY", "fernet")
API_KEY_PEPPER = _persisted_secret("API_KEY_PEPPER", "token")

DEBUG = env.bool("DEBUG", default=False)
HOST = env.str("HOST", default="127.0.0.1")
PORT = env.int("PORT", default=8317)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_TZ = True
LANGUAGE_CODE = "en-us"
USE_I18N = True
CLIRELAY_CONFIG = env.str("CLIRELAY_CONFIG", default="")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "ninja",
    "accounts",
    "channels_app",
    "usage",
    "oauth_flows",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gateway.urls"
ASGI_APPLICATION = "gateway.asgi.application"
WSGI_APPLICATION = None

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

# --- storage -------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'clirelay.sqlite3'}")}
# Under ASGI every request may run in a different thread; persistent connections would leak.
DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the request path read while the usage drainer writes.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
# Tests use a database of their own per process, so concurrent test runs never collide; a
# file (not memory) for SQLite so the server thread of end-to-end tests shares it.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"clirelay-test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_clirelay_{os.getpid()}"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- background work ----------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
# Without a broker, tasks run in-process the moment they are called.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE = {
    "prune-request-bodies": {"task": "usage.tasks.prune_request_bodies", "schedule": 3600.0},
}

# --- static files -------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- relay --------------------------------------------------------------------------------
CLIRELAY_KEY_CACHE_SECONDS = env.float("CLIRELAY_KEY_CACHE_SECONDS", default=10.0)
CLIRELAY_ROUTES_CACHE_SECONDS = env.float("CLIRELAY_ROUTES_CACHE_SECONDS", default=10.0)
CLIRELAY_UPSTREAM_CONNECT_TIMEOUT = env.float("CLIRELAY_UPSTREAM_CONNECT_TIMEOUT", default=10.0)
CLIRELAY_UPSTREAM_READ_TIMEOUT = env.float("CLIRELAY_UPSTREAM_READ_TIMEOUT", default=600.0)
CLIRELAY_MAX_BODY_BYTES = env.int("CLIRELAY_MAX_BODY_BYTES", default=32 * 1024 * 1024)
# The relay URLs skip Django's middleware and request signals (gateway/fastpath.py); off: all through Django.
CLIRELAY_FAST_PATH = env.bool("CLIRELAY_FAST_PATH", default=True)
CLIRELAY_RECORDER_BATCH = env.int("CLIRELAY_RECORDER_BATCH", default=500)
CLIRELAY_RECORDER_INTERVAL = env.float("CLIRELAY_RECORDER_INTERVAL", default=0.2)
# A concurrency slot is given back when its response ends, or after this long (accounts/limits.py).
CONCURRENCY_LEASE_SECONDS = env.int("CONCURRENCY_LEASE_SECONDS", default=600)
DATA_UPLOAD_MAX_MEMORY_SIZE = CLIRELAY_MAX_BODY_BYTES
# Remote images inlined for upstreams that only take inline data (Gemini).
CLIRELAY_MEDIA_MAX_BYTES = env.int("CLIRELAY_MEDIA_MAX_BYTES", default=20 * 1024 * 1024)
CLIRELAY_MEDIA_TIMEOUT = env.float("CLIRELAY_MEDIA_TIMEOUT", default=15.0)
CLIRELAY_MEDIA_ALLOW_PRIVATE = env.bool("CLIRELAY_MEDIA_ALLOW_PRIVATE", default=False)

CLIRELAY_ADMIN_USER = env.str("CLIRELAY_ADMIN_USER", default="admin")
CLIRELAY_ADMIN_PASSWORD = env.str("CLIRELAY_ADMIN_PASSWORD", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
    },
}
