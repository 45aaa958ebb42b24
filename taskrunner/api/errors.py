"""The API's error format (shared/API.md, "Errors") and the CSRF failure view.

Every error under /api/ is `{"error": {"code", "message", "fields"?}}`. Views
raise `ApiError` (or one of its shorthands) and the decorators in
`taskrunner.api.access` turn it into the response.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.csrf import csrf_failure as django_csrf_failure

MAX_BODY_BYTES = 1024 * 1024  # "body over 1 MiB" is 413

STATUS_OF_CODE = {
    "invalid": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "too_large": 413,
    "too_many": 429,
    "asgi_required": 501,
    "internal": 500,
    "unavailable": 503,
}


class ApiError(Exception):
    """An error answered as the contract's JSON; `fields` only for validation errors."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS_OF_CODE[self.code]

    def response(self) -> JsonResponse:
        return error_response(self.code, self.message, fields=self.fields, headers=self.headers)


def error_response(
    code: str,
    message: str,
    *,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    body: dict = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    response = JsonResponse({"error": body}, status=STATUS_OF_CODE[code])
    for name, value in (headers or {}).items():
        response[name] = value
    response["Cache-Control"] = "no-store"
    return response


def invalid(message: str, fields: dict[str, str] | None = None) -> ApiError:
    return ApiError("invalid", message, fields=fields)


def not_found(message: str) -> ApiError:
    return ApiError("not_found", message)


def conflict(message: str) -> ApiError:
    return ApiError("conflict", message)


def method_not_allowed(method: str, allowed: list[str]) -> ApiError:
    return ApiError(
        "method_not_allowed",
        f"{method} is not allowed here; use {', '.join(allowed)}.",
        headers={"Allow": ", ".join(allowed)},
    )


def too_large() -> ApiError:
    return ApiError("too_large", f"The request body is over {MAX_BODY_BYTES} bytes.")


def is_api_path(path: str) -> bool:
    from django.urls import reverse

    return path.startswith(reverse("taskrunner-api:root"))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: JSON 403 under the API, Django's page everywhere else."""
    if is_api_path(request.path):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            # Nobody to forge a request for: the real problem is the missing login.
            return error_response(
                "unauthenticated",
                "Log in (session cookie) or send 'Authorization: Bearer <token>'.",
            )
        return error_response(
            "forbidden",
            "CSRF check failed: send the X-CSRFToken header with a session, "
            f"or use a bearer token ({reason}).",
        )
    return django_csrf_failure(request, reason)
