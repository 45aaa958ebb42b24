"""System checks of the engine, with stable ids.

Each engine setting (`taskrunner.conf.SETTINGS`) is checked for its type and
bound under its own id; the deployment's shape is checked too.
"""

from django.conf import settings
from django.core.checks import Error, Warning, register

from taskrunner import conf


@register()
def check_engine_settings(app_configs, **kwargs) -> list[Error]:
    errors = []
    for setting in conf.SETTINGS:
        raw = getattr(settings, setting.name, setting.default)
        try:
            value = setting.kind(raw)
        except (TypeError, ValueError):
            value = None
        if value is None or isinstance(raw, bool) or value < setting.minimum:
            errors.append(
                Error(
                    f"{setting.name} must be a {setting.kind.__name__} of at least "
                    f"{setting.minimum:g}, not {raw!r}.",
                    hint=setting.help,
                    id=setting.check_id,
                )
            )
    return errors


@register()
def check_middleware(app_configs, **kwargs) -> list[Error]:
    if "django.middleware.gzip.GZipMiddleware" in getattr(settings, "MIDDLEWARE", []):
        return [
            Error(
                "GZipMiddleware would compress the event streams; remove it "
                "and compress in the proxy, leaving text/event-stream out.",
                id="taskrunner.E002",
            )
        ]
    return []


@register()
def check_sqlite_single_host(app_configs, **kwargs) -> list[Warning]:
    """SQLite is one file on one machine: workers of two hosts on it are a mistake.

    Judged from the workers registered and not stopped; a database that cannot
    be read yet (before `migrate`) says nothing.
    """
    from django.db import DatabaseError, connection

    from taskrunner.models import Worker

    if connection.vendor != "sqlite":
        return []
    try:
        hosts = sorted(
            set(Worker.objects.filter(stopped_at__isnull=True).values_list("hostname", flat=True))
        )
    except DatabaseError:
        return []
    if len(hosts) < 2:
        return []
    return [
        Warning(
            f"Workers of {len(hosts)} hosts ({', '.join(hosts)}) use one SQLite database.",
            hint="SQLite is for one host: use PostgreSQL (DATABASE_URL) for several, or give "
            "every worker of this machine the same TASKRUNNER_HOST.",
            id="taskrunner.W030",
        )
    ]
