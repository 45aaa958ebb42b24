"""Bearer tokens for scripts: `Authorization: Bearer <token>`.

A request with a valid token acts as the token's user and needs no CSRF token
(a browser never sends this header on its own, so there is no cross-site
request to forge). A request with an invalid token is anonymous and marked, so
the API answers 401 instead of falling back to the session.

Tokens are honoured under `/api/` only. A token made for a script is not a
login: on the pages and the admin the header is ignored (the request is
whatever its session makes it, usually anonymous, sent to the login page), so
a leaked token can never change a task in the admin, and CSRF checks stay on
for everything a browser form can reach.

The middleware also refuses an API body over 1 MiB with the API's JSON 413
before anything reads it (the CSRF check parses form bodies first, and would
answer Django's HTML 400 for a big one).
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth.models import AnonymousUser

from taskrunner.models import ApiToken


def _body_too_large(request):
    """The API's 413 for a declared body over 1 MiB, or None."""
    from taskrunner.api.errors import MAX_BODY_BYTES, is_api_path, too_large

    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None  # the view answers 400
    if length > MAX_BODY_BYTES and is_api_path(request.path):
        return too_large().response()
    return None


def _bearer(request) -> str | None:
    """The token a request carries, or None; always None outside the API."""
    from taskrunner.api.errors import is_api_path

    if not is_api_path(request.path):
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip()


def _apply(request, user) -> None:
    request.bearer_token_used = True
    request._dont_enforce_csrf_checks = True
    if user is None:
        request.bearer_token_invalid = True
        request.user = AnonymousUser()
    else:
        request.user = user

        async def auser():
            return user

        request.auser = auser


class BearerTokenMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        refusal = _body_too_large(request)
        if refusal is not None:
            return refusal
        secret = _bearer(request)
        if secret is not None:
            _apply(request, ApiToken.user_for(secret) if secret else None)
        return self.get_response(request)

    async def __acall__(self, request):
        refusal = _body_too_large(request)
        if refusal is not None:
            return refusal
        secret = _bearer(request)
        if secret is not None:
            user = await sync_to_async(ApiToken.user_for)(secret) if secret else None
            _apply(request, user)
        return await self.get_response(request)
