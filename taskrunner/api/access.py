"""The one recipe every API view follows: who may call it, with which method.

`@api_view({"GET": None, "POST": "taskrunner.start_run"})` declares the
allowed methods and the permission each needs (None: any staff user). The
decorator answers, in this order: 401 for no or a bad credential, 403 for a
non-staff user, 405 (with Allow) for another method, 403 for a missing
permission, 413 for a body over 1 MiB; then it calls the view and turns any
`ApiError` into the contract's JSON. Nothing a client sends becomes a 500: an
unexpected exception is logged and answered as JSON too.

The same decorator serves sync and async views (`request.auser()` and
`ahas_perm` in the latter, so no sync ORM call happens on the event loop).
"""

import functools
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse

from taskrunner.api.errors import (
    MAX_BODY_BYTES,
    ApiError,
    error_response,
    invalid,
    method_not_allowed,
    too_large,
)
from taskrunner.unavailable import is_database_unavailable, unavailable_response

logger = logging.getLogger(__name__)
_UNSTORABLE = re.compile("[\0\ud800-\udfff]")

Methods = Mapping[str, str | None]


def _identity_error(request: HttpRequest, user) -> ApiError | None:
    if getattr(request, "bearer_token_invalid", False):
        return ApiError("unauthenticated", "The API token is invalid or revoked.")
    if user is None or not user.is_authenticated:
        return ApiError(
            "unauthenticated",
            "Log in (session cookie) or send 'Authorization: Bearer <token>'.",
        )
    if not (user.is_active and user.is_staff):
        return ApiError("forbidden", "Only staff users may use the API.")
    return None


def _method_error(request: HttpRequest, methods: Methods) -> ApiError | None:
    allowed = list(methods)
    if "GET" in methods and "HEAD" not in methods:
        allowed.append("HEAD")
    if request.method not in allowed:
        return method_not_allowed(request.method or "?", allowed)
    return None


def _body_error(request: HttpRequest) -> ApiError | None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return invalid("The Content-Length header is not a number.")
    if length > MAX_BODY_BYTES:
        return too_large()
    return None


def _permission_for(request: HttpRequest, methods: Methods) -> str | None:
    method = "GET" if request.method == "HEAD" else request.method
    return methods.get(method or "")


def _forbidden(perm: str) -> ApiError:
    return ApiError("forbidden", f"You need the permission {perm}.")


def _internal(request: HttpRequest) -> HttpResponse:
    if is_database_unavailable(sys.exc_info()[1]):
        return unavailable_response(request)  # 503 `unavailable`, not a 500
    logger.exception("API error method=%s path=%s", request.method, request.path)
    return error_response("internal", "Internal error; it has been logged.")


def api_view(methods: Methods) -> Callable:
    def decorator(view: Callable) -> Callable:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any):
                try:
                    user = await request.auser()
                    error = _identity_error(request, user) or _method_error(request, methods)
                    if error is None:
                        perm = _permission_for(request, methods)
                        if perm and not await user.ahas_perm(perm):
                            error = _forbidden(perm)
                    if error is None:
                        error = _body_error(request)
                    if error is not None:
                        return error.response()
                    return await view(request, *args, **kwargs)
                except ApiError as exc:
                    return exc.response()
                except Exception:  # noqa: BLE001 - never an HTML 500 from the API
                    return _internal(request)

            return async_wrapper

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any):
            try:
                user = request.user
                error = _identity_error(request, user) or _method_error(request, methods)
                if error is None:
                    perm = _permission_for(request, methods)
                    if perm and not user.has_perm(perm):
                        error = _forbidden(perm)
                if error is None:
                    error = _body_error(request)
                if error is not None:
                    return error.response()
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()
            except Exception:  # noqa: BLE001 - never an HTML 500 from the API
                return _internal(request)

        return wrapper

    return decorator


def require_perm(request: HttpRequest, perm: str) -> None:
    """For views whose permission depends on the body (the task shorthand)."""
    if not request.user.has_perm(perm):
        raise _forbidden(perm)


def read_json(request: HttpRequest) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`."""
    try:
        raw = request.read(MAX_BODY_BYTES + 1)
    except OSError as exc:
        raise invalid("The request body could not be read.") from exc
    if len(raw) > MAX_BODY_BYTES:
        raise too_large()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_non_finite, parse_float=_float_or_non_finite)
    except (ValueError, RecursionError) as exc:  # ValueError includes invalid UTF-8
        raise invalid(f"The body is not valid JSON: {exc}.") from exc
    if not isinstance(body, dict):
        raise invalid("The body must be a JSON object.")
    found = _unstorable(body, ())
    if found is not None:
        path, problem = found
        where = ".".join(path) or "the body"
        # A bad parameter is named as the contract names it: `params.NAME`.
        fields = {where: problem} if len(path) == 2 and path[0] == "params" else None
        raise invalid(f"{where} {problem}.", fields)
    return body


class _NonFinite(str):
    """A number the JSON text holds but no database can store (NaN, Infinity, 1e999)."""


def _non_finite(name: str) -> _NonFinite:
    return _NonFinite(name)


def _float_or_non_finite(text: str) -> float | _NonFinite:
    value = float(text)
    return _NonFinite(text) if math.isinf(value) else value


def _unstorable(value: Any, path: tuple[str, ...]) -> tuple[tuple[str, ...], str] | None:
    """Where the body holds what neither database can store, and what it is, if anywhere.

    Non-finite numbers (PostgreSQL's jsonb refuses them, and JSON has no word
    for them) and strings with a NUL or an unpaired surrogate.
    """
    if isinstance(value, _NonFinite):
        return path, f"is {value}, which is not a finite number"
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            return path, "holds a NUL or an unpaired surrogate, which cannot be stored"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unstorable(key, path) or _unstorable(item, (*path, str(key)))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unstorable(item, (*path, str(index)))
            if found:
                return found
    return None
