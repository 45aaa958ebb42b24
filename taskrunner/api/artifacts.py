"""A run's artifacts over HTTP: the list, and each file streamed from the storage.

`GET /api/runs/{id}/artifacts/{name}` answers with `Content-Length`, `ETag`
(the SHA-256 in quotes), `Accept-Ranges: bytes`, and always
`Content-Disposition: attachment`, `X-Content-Type-Options: nosniff` and a
sandboxing `Content-Security-Policy`: a file a child wrote (HTML, SVG) never
runs in the site's origin. One `Range` (`bytes=A-B`, `A-`, `-N`) gives `206`
with `Content-Range`; a range past the end `416`; several ranges, or one
that cannot be parsed, are ignored (the whole file, as RFC 9110 allows).
`If-None-Match` with the ETag gives `304`.

Under ASGI the body is an async generator reading fixed-size chunks on a
thread (memory stays flat, the event loop never blocks on the disk); under
WSGI a plain iterator. The request's database connection is let go before
the first byte.
"""

import asyncio
import re
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

from taskrunner.api.access import api_view
from taskrunner.api.errors import invalid, not_found
from taskrunner.api.views import MAX_ID, _json
from taskrunner.artifacts import CHUNK_BYTES, artifact_storage, name_problem
from taskrunner.models import Artifact, Run
from taskrunner.serializers import artifact_json

RANGE_RE = re.compile(r"^bytes=(?P<start>\d*)-(?P<end>\d*)$")
SANDBOX_CSP = "default-src 'none'; sandbox"


def _artifacts_of(run_id: int) -> list[dict]:
    if not (0 < run_id <= MAX_ID and Run.objects.filter(pk=run_id).exists()):
        raise not_found(f"No run with id {run_id}.")
    return [artifact_json(a) for a in Artifact.objects.filter(run_id=run_id).order_by("id")]


@api_view({"GET": None})
def run_artifacts(request: HttpRequest, run_id: int) -> HttpResponse:
    """GET /api/runs/{id}/artifacts/: the run's artifacts, oldest first."""
    return _json({"artifacts": _artifacts_of(run_id)})


def _find(run_id: int, name: str) -> Artifact:
    if "\x00" in name:
        raise invalid("An artifact's name cannot hold a NUL.")
    problem = name_problem(name)
    if problem or not 0 < run_id <= MAX_ID:
        raise not_found(f"No artifact named {name!r} in run {run_id}.")
    artifact = Artifact.objects.filter(run_id=run_id, name=name).first()
    if artifact is None:
        if not Run.objects.filter(pk=run_id).exists():
            raise not_found(f"No run with id {run_id}.")
        raise not_found(f"No artifact named {name!r} in run {run_id}.")
    return artifact


class Unsatisfiable(Exception):
    """The range starts past the end of the file: 416."""


def requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single range; None for the whole file. Unsatisfiable: 416."""
    if not header:
        return None
    match = RANGE_RE.match(header.strip())
    if not match or (not match["start"] and not match["end"]):
        return None  # several ranges, or not one we read: the whole file
    if not match["start"]:  # the last N bytes
        count = int(match["end"])
        if count == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - count), size - 1
    first = int(match["start"])
    last = int(match["end"]) if match["end"] else size - 1
    if match["end"] and last < first:
        return None  # syntactically invalid: ignored
    if first >= size:
        raise Unsatisfiable
    return first, min(last, size - 1)


def _range_not_satisfiable(size: int) -> HttpResponse:
    response = JsonResponse(
        {
            "error": {
                "code": "range_not_satisfiable",
                "message": f"The range is past the end of the file ({size} bytes).",
            }
        },
        status=416,
    )
    response["Content-Range"] = f"bytes */{size}"
    response["Cache-Control"] = "no-store"
    return response


async def _read_async(storage_name: str, first: int, count: int) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(artifact_storage().open, storage_name, "rb")
    try:
        if first:
            await asyncio.to_thread(handle.seek, first)
        while count > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK_BYTES, count))
            if not chunk:
                return
            count -= len(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def _read_sync(storage_name: str, first: int, count: int) -> Iterator[bytes]:
    with artifact_storage().open(storage_name, "rb") as handle:
        handle.seek(first)
        while count > 0:
            chunk = handle.read(min(CHUNK_BYTES, count))
            if not chunk:
                return
            count -= len(chunk)
            yield chunk


@api_view({"GET": None})
async def run_artifact(
    request: HttpRequest, run_id: int, name: str
) -> HttpResponse | StreamingHttpResponse:
    """GET /api/runs/{id}/artifacts/{name}: the file, as an attachment, never inline."""
    artifact = await sync_to_async(_find)(run_id, name)
    etag = f'"{artifact.sha256}"'
    size = artifact.size
    if request.headers.get("If-None-Match") == etag:
        not_modified = HttpResponse(status=304)
        not_modified["ETag"] = etag
        return not_modified
    try:
        wanted = requested_range(request.headers.get("Range"), size)
    except Unsatisfiable:
        return _range_not_satisfiable(size)
    first, last = wanted if wanted else (0, size - 1)
    count = last - first + 1 if size else 0
    await sync_to_async(connections.close_all)()  # a long download holds no connection
    response: HttpResponse | StreamingHttpResponse
    if request.method == "HEAD":
        response = HttpResponse(status=206 if wanted else 200)
    elif isinstance(request, ASGIRequest):
        response = StreamingHttpResponse(_read_async(artifact.storage_name, first, count))
    else:
        response = StreamingHttpResponse(_read_sync(artifact.storage_name, first, count))
    if wanted:
        response.status_code = 206
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
    response["Content-Type"] = artifact.content_type
    response["Content-Length"] = str(count)
    response["ETag"] = etag
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = content_disposition_header(True, name.rsplit("/", 1)[-1])
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = SANDBOX_CSP
    response["Cache-Control"] = "private, no-cache"
    return response
