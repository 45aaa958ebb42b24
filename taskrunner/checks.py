"""System checks of the engine, with stable ids."""

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_settings(app_configs, **kwargs):
    errors = []
    if int(getattr(settings, "TASKRUNNER_MAX_LINE_BYTES", 65536)) < 1024:
        errors.append(
            Error(
                "TASKRUNNER_MAX_LINE_BYTES must be at least 1024.",
                id="taskrunner.E001",
            )
        )
    middleware = getattr(settings, "MIDDLEWARE", [])
    if "django.middleware.gzip.GZipMiddleware" in middleware:
        errors.append(
            Error(
                "GZipMiddleware would compress the event streams; remove it "
                "and compress in the proxy, leaving text/event-stream out.",
                id="taskrunner.E002",
            )
        )
    return errors
