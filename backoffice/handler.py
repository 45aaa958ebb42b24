"""Django's ASGI handler, with a sync view's whole request in one thread hop.

Under ASGI, Django runs the middleware chain in async mode for every request.
Each of its own middleware (`MiddlewareMixin`) then crosses from the event
loop to the request's thread for `process_request`, again for
`process_view` and `process_response`, and the sync view once more: about a
dozen round trips between the loop and a thread for a control request, each
a thread wake-up that a loaded machine makes slow. Only the event streams
(and the other async views) need the loop; every sync view gains nothing
from it.

So this handler keeps two chains of the same MIDDLEWARE: the async one for
async views, and a sync one that a sync view's request runs through whole,
in a single `sync_to_async` hop (the same thread-sensitive context Django
uses, so database connections and the request signals behave as before).
A path that resolves to no view (404s, APPEND_SLASH redirects) takes the
sync chain too.
"""

from inspect import iscoroutinefunction

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, get_resolver


class OneHopASGIHandler(ASGIHandler):
    """`ASGIHandler` that runs sync views' requests in one hop to a thread."""

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=True)
        self._sync_chain = BaseHandler()
        self._sync_chain.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        if _view_is_async(request.path_info):
            return await super().get_response_async(request)
        get_response = sync_to_async(self._sync_chain.get_response, thread_sensitive=True)
        return await get_response(request)


def _view_is_async(path: str) -> bool:
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return False
    return iscoroutinefunction(match.func)
