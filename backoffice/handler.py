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

Django also gives each request a thread of its own (a new `ThreadSensitiveContext`
makes a new thread for the request's sync code, and the thread a new
database connection). Here a request borrows a thread from a small pool
instead (`ThreadSensitiveContext(executor=...)`, asgiref's own way to reuse
one): still one request at a time on a thread, as Django requires, and the
thread's database connection is kept for the next request when
`CONN_MAX_AGE` allows (SQLite; PostgreSQL has its connection pool).
"""

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from inspect import iscoroutinefunction

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, get_resolver

ASYNC_VIEW = "taskrunner.async_view"  # the scope key: does the path resolve to an async view
IDLE_THREADS = 16  # kept for the next requests; more may run at once


class RequestThreads:
    """Single-thread executors lent to one request at a time, kept when returned."""

    def __init__(self, keep: int = IDLE_THREADS):
        self.keep = keep
        self._idle: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        self._made = 0

    def take(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self._made += 1
            number = self._made
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"request-{number}")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        if getattr(executor, "_shutdown", False):
            return  # shut down by its request: never lent again
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)


class OneHopASGIHandler(ASGIHandler):
    """`ASGIHandler` that runs sync views' requests in one hop to a pooled thread."""

    def __init__(self) -> None:
        super().__init__()
        self.threads = RequestThreads()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # In a context of its own: a server may start a keep-alive connection's
        # next request from inside the previous one's task (uvicorn does, when
        # the request is already there), whose context still names that
        # request's thread; asgiref refuses a pooled thread's context once it
        # has exited, and a shared one would mix two requests on one thread.
        task = asyncio.create_task(self._call(scope, receive, send), context=contextvars.Context())
        await task

    async def _call(self, scope, receive, send) -> None:
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        scope[ASYNC_VIEW] = _view_is_async(path)
        if scope[ASYNC_VIEW]:
            # A stream lets go of its thread while it waits for hours
            # (`taskrunner.hub.release_request_thread`): Django's own context.
            async with ThreadSensitiveContext():
                await self.handle(scope, receive, send)
            return
        executor = self.threads.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give_back(executor)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=True)
        self._sync_chain = BaseHandler()
        self._sync_chain.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        scope = getattr(request, "scope", {})
        is_async = scope.get(ASYNC_VIEW)
        if is_async is None:
            is_async = _view_is_async(request.path_info)
        if is_async:
            return await super().get_response_async(request)
        get_response = sync_to_async(self._sync_chain.get_response, thread_sensitive=True)
        return await get_response(request)


def _view_is_async(path: str) -> bool:
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return False
    return iscoroutinefunction(match.func)
