"""Django's header-only middleware, run on the event loop instead of a thread.

Under ASGI, each of Django's own middleware (`MiddlewareMixin`) hops to the
request's thread for `process_request` and again for `process_response`:
about a dozen round trips between the loop and a thread for every API call,
control requests and stream openings included. The classes here are the
same middleware, with those two methods called directly on the loop; only
middleware that never touches the database or a file is listed (headers,
redirects, the lazy user). The session middleware (its response saves the
session) and the messages middleware keep Django's threaded path, and so do
the security, CSRF and clickjacking ones: `manage.py check --deploy` looks
for them under their own names.
"""

from django.contrib.auth import middleware as auth
from django.middleware import common, csp
from django.utils.deprecation import MiddlewareMixin


class _OnTheLoop(MiddlewareMixin):
    """`MiddlewareMixin.__acall__` without `sync_to_async` around the two hooks."""

    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        # Only ever installed in an async chain: get_response is a coroutine function.
        response = response or await self.get_response(request)  # type: ignore[misc]
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class CommonMiddleware(_OnTheLoop, common.CommonMiddleware):
    pass


class AuthenticationMiddleware(_OnTheLoop, auth.AuthenticationMiddleware):
    """Sets a lazy `request.user` (and `auser`); nothing is read until a view asks."""


class ContentSecurityPolicyMiddleware(_OnTheLoop, csp.ContentSecurityPolicyMiddleware):
    pass
