"""A database that is away: telling it from a refusal, and answering `503` meanwhile.

`is_database_unavailable(exc)` is the one rule, shared by the worker and the
web side. Transient means the same statement will succeed later: the
connection is gone or was never made (PostgreSQL restarting or stopped, a
pool timeout), the server is shutting down, out of resources (disk full), or
a lock was held past the busy timeout (SQLite "database is locked"). Anything
else the database raises (invalid JSON, a constraint, a missing row) is a
refusal of that particular data: retrying it would never end.

`DatabaseUnavailableMiddleware` turns a transient database error on any page
or endpoint into `503` (with `Retry-After`): the API's JSON
`{"error": {"code": "unavailable", ...}}` under `/api/`, a plain page
(templates/503.html, rendered without the database) elsewhere. It catches
view errors through `process_exception`, and errors raised by other
middleware (sessions, bearer tokens) through the `got_request_exception`
signal, which marks the request before Django renders its 500. It is sync
and async capable, so async views (the streams) keep their event loop.
"""

import logging
import sqlite3
import sys

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
# SQLSTATE classes that mean "not now" rather than "not this": connection
# exception, transaction rollback (serialization, deadlock), insufficient
# resources (disk full, too many connections), operator intervention
# (shutdown, cancel), system error (I/O).
TRANSIENT_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58"}


# SQLite raises OperationalError for "not now" and for "never" alike ("no such
# column" too): only these messages mean the same statement may pass later.
SQLITE_TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
    "attempt to write a readonly database",
)


def _postgres_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # SQLite-only installs
        return ()
    return (psycopg.OperationalError, psycopg.InterfaceError)


POSTGRES_TRANSIENT = _postgres_errors()


def is_database_unavailable(exc: BaseException | None) -> bool:
    """True if `exc` means the database cannot be reached now (retry), not a refusal."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, sqlite3.OperationalError):
            return any(message in str(exc).lower() for message in SQLITE_TRANSIENT_MESSAGES)
        if isinstance(exc, (sqlite3.InterfaceError, *POSTGRES_TRANSIENT)):
            return True  # psycopg's OperationalError: the connection or the server
        sqlstate = getattr(exc, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES:
            return True
        if isinstance(exc, (OperationalError, InterfaceError)) and exc.__cause__ is None:
            return True  # Django's own, with no driver error behind it
        # Django wraps the driver's error; the driver's is the cause.
        exc = exc.__cause__
        seen += 1
    return False


def unavailable_response(request: HttpRequest) -> HttpResponse:
    from taskrunner.api.errors import error_response, is_api_path

    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if is_api_path(request.path):
        return error_response(
            "unavailable",
            "The database is unavailable; try again in a few seconds.",
            headers=headers,
        )
    # No request context: its processors (user, messages) would need the database.
    html = render_to_string("503.html", {"retry_after": RETRY_AFTER_SECONDS})
    response = HttpResponse(html, status=503, headers=headers)
    response["Cache-Control"] = "no-store"
    return response


def _mark_request(sender, request=None, **kwargs) -> None:
    # Sent while the exception is being handled (in the same thread: asgiref
    # re-raises it in the thread that runs Django's exception handling).
    if request is not None and is_database_unavailable(sys.exc_info()[1]):
        request.database_unavailable = True


got_request_exception.connect(_mark_request, dispatch_uid="taskrunner-database-unavailable")


class DatabaseUnavailableMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self._checked(request, self.get_response(request))

    async def __acall__(self, request):
        return self._checked(request, await self.get_response(request))

    def process_exception(self, request: HttpRequest, exception: Exception):
        if not is_database_unavailable(exception):
            return None
        logger.warning(
            "database unavailable method=%s path=%s error=%s",
            request.method,
            request.path,
            exception,
        )
        return unavailable_response(request)

    def _checked(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if getattr(request, "database_unavailable", False) and response.status_code >= 500:
            return unavailable_response(request)
        return response
