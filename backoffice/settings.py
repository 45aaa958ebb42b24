"""Settings of the back office, read from the environment or a `.env` file.

Every variable is optional for local use; a bad value stops start-up with a
message naming the variable (django-environ raises ImproperlyConfigured).
See the README's "Configuration" section for the list.
"""

import os
import secrets
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


class StrictEnv(environ.Env):
    """django-environ, but a value of the wrong type names its variable."""

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except (ValueError, TypeError) as exc:
            raise ImproperlyConfigured(f"{var} has a bad value: {exc}") from None

    def db_url(self, var="DATABASE_URL", default=environ.Env.NOTSET, engine=None):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # "Engine not recognized" is an error here
                return super().db_url(var, default=default, engine=engine)
        except (KeyError, ValueError, UserWarning) as exc:
            raise ImproperlyConfigured(
                f"{var} must be sqlite:///PATH or postgres://USER@HOST:PORT/NAME ({exc})."
            ) from None


env = StrictEnv()
environ.Env.read_env(BASE_DIR / ".env")


def _bool(name: str, default: bool) -> bool:
    """A boolean variable; anything but a clear yes/no is refused, not guessed."""
    raw = env.str(name, default="")
    if raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}.")


def _local_secret_key() -> str:
    """A key generated once and kept in var/, so local sessions survive restarts."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = _bool("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = _local_secret_key()

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Behind TLS (the default when DEBUG is off) cookies are secure and HSTS is on.
# HTTPS=false serves plain HTTP with DEBUG off, e.g. on 127.0.0.1 in tests.
HTTPS = _bool("HTTPS", not DEBUG)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and _bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
# A switch like the others: "false", "0" or "no" must not turn proxy trust on.
if _bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "taskrunner",
    "backoffice",
]

# Some of Django's own middleware runs on the event loop
# (backoffice/inline_middleware.py: the same classes, without a hop to a
# thread and back for each). The security, CSRF and clickjacking ones stay
# under their own names, which `check --deploy` looks for.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # No WhiteNoiseMiddleware: static files are served before Django, in
    # backoffice/asgi.py, so no sync-only middleware sits in front of the
    # async views (every request would cross to a thread and back).
    # Outside everything that may query: a database that is away is a 503.
    "taskrunner.unavailable.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "backoffice.inline_middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "backoffice.inline_middleware.AuthenticationMiddleware",
    "taskrunner.auth.BearerTokenMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "backoffice.inline_middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "backoffice.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "backoffice.asgi.application"
WSGI_APPLICATION = "backoffice.wsgi.application"

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
_db = DATABASES["default"]
if "ENGINE" not in _db:
    raise ImproperlyConfigured("DATABASE_URL must name a sqlite:// or postgres:// database.")
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend, with a finer wait for the write lock (its docstring).
    _db["ENGINE"] = "taskrunner.db.sqlite3"
    VAR_DIR.mkdir(exist_ok=True)
    # WAL lets the web processes read while the supervisor writes; IMMEDIATE
    # transactions wait for the write lock (busy timeout) instead of failing
    # at once with "database is locked" when a read turns into a write.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        # Seconds a write waits for another's lock before "database is locked".
        "timeout": env.float("SQLITE_BUSY_TIMEOUT", default=20.0),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        **_db.get("OPTIONS", {}),
    }
    # A web request's thread is pooled (backoffice.handler): its connection
    # is kept for the next request instead of opened each time (0.5 ms).
    _db["CONN_MAX_AGE"] = env.int("SQLITE_CONN_MAX_AGE", default=60)
    # Tests start real workers and servers in other processes: they need a
    # file, one per test session so that concurrent sessions never share it.
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # Streams must not pin a connection each (see PITFALLS A-7): no persistence.
    _db["CONN_MAX_AGE"] = 0
    # One test database per test session, so concurrent sessions never share it.
    _db["TEST"] = {"NAME": f"test_{_db['NAME']}_{os.getpid()}"}
    # Each ASGI request runs in a thread of its own: a burst of requests (200
    # dashboards reconnecting after a deploy) would open as many connections
    # and hit max_connections. A pool per process bounds them; requests queue.
    _db["OPTIONS"] = {
        "pool": {
            "min_size": 1,
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
            # Seconds a request waits for a connection (the database being
            # away included) before its 503.
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        },
        **_db.get("OPTIONS", {}),
    }
else:
    raise ImproperlyConfigured("DATABASE_URL must name a sqlite:// or postgres:// database.")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing one
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "backoffice.storage.StaticStorage"
        )
    },
    # The files runs keep (README "Artifacts"): a local directory by default;
    # any Django storage backend (S3 through django-storages) for several hosts.
    "taskrunner_artifacts": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": env.str("TASKRUNNER_ARTIFACTS_ROOT", default=str(VAR_DIR / "artifacts")),
        },
    },
}
# Serve from the finders when the manifest has not been built (tests, make run).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "/"

# Content Security Policy: no inline script anywhere, no third-party origin.
from django.utils.csp import CSP  # noqa: E402

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured("LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL.")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "taskrunner": {"handlers": ["console"], "level": LOG_LEVEL},
    },
}

# Engine settings (TASKRUNNER_*): each is declared once, with its type, default
# and bound, in taskrunner/conf.py; here each is read from the environment
# under its own name (a value of the wrong type stops start-up naming it, one
# out of bounds is a system check error).
from taskrunner import conf as _taskrunner_conf  # noqa: E402

for _setting in _taskrunner_conf.SETTINGS:
    _read = env.int if _setting.kind is int else env.float
    globals()[_setting.name] = _read(_setting.name, default=_setting.default)
# Where this process's workers run their children (default: the hostname).
TASKRUNNER_HOST = env.str(_taskrunner_conf.HOST, default="")
# SQLite: where the workers bind the sockets they are woken through (a path,
# so not among the numbers above; taskrunner.conf.wake_dir reads it).
TASKRUNNER_WAKE_DIR = env.str("TASKRUNNER_WAKE_DIR", default=str(VAR_DIR / "wake"))
TASKRUNNER_WARM_STARTS = _bool("TASKRUNNER_WARM_STARTS", True)
# Where a worker makes each run's empty TASKRUNNER_ARTIFACTS_DIR (one directory
# per run, removed once its files are kept); on the artifact storage's
# filesystem, keeping a file is a rename instead of a copy.
TASKRUNNER_ARTIFACTS_WORK_DIR = env.str(
    "TASKRUNNER_ARTIFACTS_WORK_DIR", default=str(VAR_DIR / "run-artifacts")
)

# The API answers a failed CSRF check with its JSON 403 (HTML elsewhere).
CSRF_FAILURE_VIEW = "taskrunner.api.errors.csrf_failure"

# Django's own tasks (`@task` functions, `enqueue`) run as supervised runs.
TASKS = {"default": {"BACKEND": "taskrunner.backends.SupervisedBackend"}}
