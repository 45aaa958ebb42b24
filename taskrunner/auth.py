"""Bearer tokens for scripts: `Authorization: Bearer <token>`.

A request with a valid token acts as the token's user and needs no CSRF token
(a browser never sends this header on its own, so there is no cross-site
request to forge). A request with an invalid token is anonymous and marked, so
the API answers 401 instead of falling back to the session.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth.models import AnonymousUser

from taskrunner.models import ApiToken


def _bearer(request) -> str | None:
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
        secret = _bearer(request)
        if secret is not None:
            _apply(request, ApiToken.user_for(secret) if secret else None)
        return self.get_response(request)

    async def __acall__(self, request):
        secret = _bearer(request)
        if secret is not None:
            user = await sync_to_async(ApiToken.user_for)(secret) if secret else None
            _apply(request, user)
        return await self.get_response(request)
