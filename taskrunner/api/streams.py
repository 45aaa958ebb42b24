"""The streaming endpoints: a run's events (SSE), the dashboard feed (SSE), the log.

Each SSE view is an async view that checks access and reads the run (in the
hub's database thread), then returns a `StreamingHttpResponse` over an async
generator. The generator first lets go of the request's thread and database
connection (a waiting client holds neither), subscribes to the process's hub,
and sends whatever is ready as ONE write: a replay of thousands of events is
one chunk, not thousands. It sends a keepalive comment when nothing happened
for a while, ends with `end` after the run's final status, and closes after a
maximum lifetime so clients reconnect (with Last-Event-ID) and a server
restart never waits on them. Disconnects arrive as CancelledError, which is
never swallowed; `finally` unsubscribes.

Under WSGI (`manage.py runserver`) an async generator would be collected
whole before the first byte (PITFALLS A-1): the streams refuse with a clear
JSON error instead of hanging.
"""

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import content_disposition_header

from taskrunner import conf, sse
from taskrunner.api.access import api_view
from taskrunner.api.errors import ApiError, invalid, not_found
from taskrunner.api.views import MAX_ID, get_task, task_detail
from taskrunner.events import store
from taskrunner.hub import Hub, get_hub, release_request_thread
from taskrunner.models import FINAL_STATUSES, Run

logger = logging.getLogger(__name__)
RETRY_MS = 1000
LOG_BYTES = 1024 * 1024  # log text read per query of the text log


def max_streams_per_user() -> int:
    return conf.sse_max_streams_per_user()


def max_streams_per_process() -> int:
    return conf.sse_max_streams_per_process()


class StreamSlots:
    """Open SSE streams of this process, per user: beyond a cap, `429 too_many`.

    A slot is taken before the 200 is sent and given back once, by whichever
    comes first: the generator's `finally` or the response's close (Django
    calls it even when the generator never started).
    """

    def __init__(self) -> None:
        self.total = 0
        self.by_user: dict[object, int] = {}

    def take(self, user_key: object):
        if self.total >= max_streams_per_process():
            raise ApiError("too_many", "This server has too many open streams; try again later.")
        if self.by_user.get(user_key, 0) >= max_streams_per_user():
            raise ApiError(
                "too_many",
                f"Too many open streams for one user (at most {max_streams_per_user()}); "
                "close some first.",
            )
        self.total += 1
        self.by_user[user_key] = self.by_user.get(user_key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.total -= 1
            left = self.by_user[user_key] - 1
            if left:
                self.by_user[user_key] = left
            else:
                del self.by_user[user_key]

        return release


slots = StreamSlots()


async def _user_key(request: HttpRequest) -> object:
    user = await request.auser()
    return user.pk


def _capped(response: StreamingHttpResponse, release) -> StreamingHttpResponse:
    # Django calls these when the server closes the response, however it ends.
    response._resource_closers.append(release)  # type: ignore[attr-defined]
    return response


def keepalive_seconds() -> float:
    return conf.sse_keepalive_seconds()


def max_stream_seconds() -> float:
    return conf.sse_max_seconds()


def _require_asgi(request: HttpRequest) -> None:
    if not isinstance(request, ASGIRequest):
        raise ApiError(
            "asgi_required",
            "Streams need an ASGI server: run `uvicorn backoffice.asgi:application` "
            "(or `make run`); `manage.py runserver` is WSGI and cannot stream.",
        )


def _stream_response(content: AsyncIterator[bytes]) -> StreamingHttpResponse:
    return StreamingHttpResponse(
        content,
        content_type="text/event-stream; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _stream_error() -> bytes:
    """The last words of a stream that failed: the client reconnects (Last-Event-ID)."""
    return sse.event({"message": "The stream failed; reconnecting resumes it."}, event="error")


class HubUnavailable(Exception):
    """The hub cannot reach the database: the stream ends with its `error` event."""


async def _unless_unavailable(hub: Hub, awaitable):
    """The result of `awaitable`, unless the hub finds the database away first."""
    if hub.unavailable.is_set():
        raise HubUnavailable
    pending = asyncio.ensure_future(awaitable)
    down = asyncio.ensure_future(hub.unavailable.wait())
    try:
        done, _ = await asyncio.wait({pending, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        down.cancel()
        if not pending.done():
            pending.cancel()  # the database is away, or the client left
    if pending in done:
        return pending.result()
    raise HubUnavailable


def _stream_response_head() -> HttpResponse:
    return HttpResponse(
        content_type="text/event-stream; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _cursor(request: HttpRequest, last_seq: int) -> tuple[int, bool]:
    """Where to start: (cursor, explicit) from Last-Event-ID, ?after or ?tail.

    A bad `tail` is a 400 even when Last-Event-ID or `after` makes it unused.
    """
    tail = _tail(request)
    for name, raw in (
        ("Last-Event-ID", request.headers.get("Last-Event-ID")),
        ("after", request.GET.get("after")),
    ):
        if raw is None or raw.strip() == "":
            continue
        try:
            value = int(raw)
        except ValueError:
            raise invalid(f"{name} must be an event seq.", {name: "must be an integer"}) from None
        if not 0 <= value <= MAX_ID:
            raise invalid(f"{name} must be an event seq.", {name: "must be 0 or more"})
        return value, True
    if tail is not None:
        return max(0, last_seq - tail), False
    return 0, False


def _tail(request: HttpRequest) -> int | None:
    raw = request.GET.get("tail")
    if not raw:
        return None
    try:
        tail = int(raw)
    except ValueError:
        raise invalid("tail must be a number of events.", {"tail": "must be an integer"}) from None
    if tail < 0:
        raise invalid("tail must be a number of events.", {"tail": "must be 0 or more"})
    return tail


async def _run_state(hub: Hub, run_id: int) -> dict[str, Any] | None:
    if not 0 < run_id <= MAX_ID:
        return None

    def state() -> dict[str, Any] | None:
        fields = ("id", "status", "last_seq", "exit_code", "log_pruned_before")
        return Run.objects.filter(pk=run_id).values(*fields).first()

    return await hub.db(state)


async def _let_go_of_the_connection() -> None:
    """Give the request thread's connection (opened for auth) back before waiting on the hub.

    With a pool, a burst of streams would otherwise hold every pooled connection
    while they wait for the hub's thread, which needs one too.
    """
    await sync_to_async(connections.close_all)()


async def _run_stream(request: HttpRequest, run_id: int) -> HttpResponseBase:
    _require_asgi(request)
    await _let_go_of_the_connection()
    hub = get_hub()
    state = await _run_state(hub, run_id)
    if state is None:
        raise not_found(f"No run with id {run_id}.")
    if request.method == "HEAD":
        return _stream_response_head()
    cursor, explicit = _cursor(request, state["last_seq"])
    final_at = None
    if state["status"] in FINAL_STATUSES:
        if explicit and cursor >= state["last_seq"]:
            return HttpResponse(status=204)  # the end was seen: stop reconnecting
        final_at = (state["last_seq"], state["status"], state["exit_code"])
    release = slots.take(await _user_key(request))
    # Lines before `log_pruned_before` were deleted (the log cap): a client asking
    # for them gets one `pruned` event, then the events from there on.
    pruned = 0
    if cursor + 1 < state["log_pruned_before"]:
        pruned, cursor = state["log_pruned_before"], state["log_pruned_before"] - 1
    events = _run_events(hub, run_id, cursor, state["last_seq"], final_at, release, pruned)
    return _capped(_stream_response(events), release)


async def _run_events(
    hub: Hub, run_id: int, cursor: int, frontier: int, final_at, release, pruned: int = 0
):
    await release_request_thread()
    sub = hub.subscribe_run(run_id, cursor, frontier=frontier, final_at=final_at)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_stream_seconds()
    keepalive = keepalive_seconds()
    try:
        yield sse.retry(RETRY_MS)
        if pruned:
            yield sse.pruned(pruned)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return  # lifetime cap: the client reconnects with Last-Event-ID
            data, end = await _unless_unavailable(hub, sub.next(min(keepalive, remaining)))
            if sub.dropped:
                return  # it stopped reading: it resumes with Last-Event-ID
            if data is None:
                if loop.time() < deadline:
                    yield sse.KEEPALIVE
                continue
            if end is not None:
                yield data + sse.end(*end)
                return
            yield data
    except HubUnavailable:
        logger.warning("run stream closed: the database is unavailable run_id=%s", run_id)
        yield _stream_error()
    except Exception:  # noqa: BLE001 - after the 200, an error can only be an event
        # (CancelledError, a disconnect, is not an Exception: it goes through.)
        logger.exception("run stream failed run_id=%s", run_id)
        yield _stream_error()
    finally:
        hub.unsubscribe_run(sub)
        release()


@api_view({"GET": None})
async def run_events(request: HttpRequest, run_id: int) -> HttpResponseBase:
    """GET /api/runs/{id}/events/: the run's events as SSE."""
    return await _run_stream(request, run_id)


def _wants_event_stream(request: HttpRequest) -> bool:
    # HEAD too: a HEAD must answer with the headers its GET would have.
    accept = request.headers.get("Accept", "")
    return request.method in ("GET", "HEAD") and "text/event-stream" in accept


async def task_detail_or_stream(request: HttpRequest, name: str) -> HttpResponseBase:
    """/api/tasks/{name}/: the task, or (Accept: text/event-stream) its newest run's events."""
    if _wants_event_stream(request):
        return await task_events(request, name)
    return await sync_to_async(task_detail)(request, name)


@api_view({"GET": None})
async def task_events(request: HttpRequest, name: str) -> HttpResponseBase:
    _require_asgi(request)
    await _let_go_of_the_connection()
    hub = get_hub()

    def newest() -> int | None:
        task = get_task(name)
        return Run.objects.filter(task=task).order_by("-id").values_list("id", flat=True).first()

    run_id = await hub.db(newest)
    if run_id is None:
        raise not_found(f"Task {name!r} has no run yet.")
    return await _run_stream(request, run_id)


# --- the dashboard feed ------------------------------------------------------


@api_view({"GET": None})
async def dashboard_events(request: HttpRequest) -> HttpResponseBase:
    """GET /api/events/: Run JSON of every active run, then of every run that changes."""
    _require_asgi(request)
    if request.method == "HEAD":
        return _stream_response_head()
    release = slots.take(await _user_key(request))
    await _let_go_of_the_connection()
    return _capped(_stream_response(_dashboard(get_hub(), release)), release)


async def _dashboard(hub: Hub, release):
    await release_request_thread()
    sub = await hub.subscribe_dashboard()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_stream_seconds()
    keepalive = keepalive_seconds()
    try:
        yield sse.retry(RETRY_MS) + await hub.read_active_runs()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            data = await _unless_unavailable(hub, sub.next(min(keepalive, remaining)))
            yield sse.KEEPALIVE if data is None else data
    except HubUnavailable:
        logger.warning("dashboard stream closed: the database is unavailable")
        yield _stream_error()
    except Exception:  # noqa: BLE001 - after the 200, an error can only be an event
        logger.exception("dashboard stream failed")
        yield _stream_error()
    finally:
        hub.unsubscribe_dashboard(sub)
        release()


# --- the log as text -------------------------------------------------------------


def _log_text(events: list[store.Event]) -> str:
    parts = []
    for event in events:
        parts.append(event.text)
        if not event.continued:
            parts.append("\n")
    return "".join(parts)


def _log_batch(run_id: int, after: int) -> tuple[str, int, bool]:
    """Log text after seq `after`, at most about LOG_BYTES: (text, last seq, more to come)."""
    events = store.read_after(run_id, after, max_events=100_000, max_bytes=LOG_BYTES, log_only=True)
    if not events:
        return "", after, False
    return _log_text(events), events[-1].seq, True


async def _log_async(hub: Hub, run_id: int):
    await release_request_thread()
    after = 0
    while True:
        text, after, more = await hub.db(functools.partial(_log_batch, run_id, after))
        if text:
            yield text.encode("utf-8", "replace")
        if not more:
            return


def _log_sync(run_id: int):
    after = 0
    while True:
        text, after, more = _log_batch(run_id, after)
        if text:
            yield text.encode("utf-8", "replace")
        if not more:
            connections.close_all()
            return


@api_view({"GET": None})
async def run_log(request: HttpRequest, run_id: int) -> HttpResponseBase:
    """GET /api/runs/{id}/log/: the whole log as text, streamed; ?download=1 as a file."""
    if isinstance(request, ASGIRequest):
        await _let_go_of_the_connection()
        hub = get_hub()
        if await _run_state(hub, run_id) is None:
            raise not_found(f"No run with id {run_id}.")
        await sync_to_async(connections.close_all)()
        content = _log_async(hub, run_id)
    else:  # WSGI: a sync iterator streams there (an async one would not)
        exists = (
            0 < run_id <= MAX_ID and await sync_to_async(Run.objects.filter(pk=run_id).exists)()
        )
        if not exists:
            raise not_found(f"No run with id {run_id}.")
        content = _log_sync(run_id)
    response = StreamingHttpResponse(content, content_type="text/plain; charset=utf-8")
    response["X-Accel-Buffering"] = "no"
    if request.GET.get("download") not in (None, "", "0", "false"):
        response["Content-Disposition"] = content_disposition_header(True, f"run-{run_id}.log")
    return response


# --- introspection -------------------------------------------------------------


@api_view({"GET": None})
async def hub_debug(request: HttpRequest) -> HttpResponseBase:
    """GET /api/debug/hub/: this process's hub counters (staff only), for tests and ops."""
    from django.http import JsonResponse

    return JsonResponse(get_hub().describe())
