"""Static files served beside Django, not through it (`backoffice.asgi`).

WhiteNoise is sync-only middleware: placed in MIDDLEWARE, it makes every
request, each API call and event stream included, cross from the event loop
to a thread and back before reaching an async view. Here WhiteNoise only
finds the file and its headers (configured from the Django settings exactly
as its middleware would be: the manifest's hashed names cached for good,
the compressed variants, the finders when nothing was collected); the bytes
are read off the loop, 64 KiB at a time. A path that is no static file goes
on to Django, which answers 404 as before.

Responses carry the security headers Django's SecurityMiddleware would add
to a file (nosniff, HSTS when configured, the referrer policy).
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings
from whitenoise.middleware import WhiteNoiseMiddleware

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CHUNK = 64 * 1024


def security_headers() -> list[tuple[bytes, bytes]]:
    headers = []
    if getattr(settings, "SECURE_CONTENT_TYPE_NOSNIFF", True):
        headers.append((b"x-content-type-options", b"nosniff"))
    seconds = getattr(settings, "SECURE_HSTS_SECONDS", 0)
    if seconds:
        # Browsers ignore HSTS over plain HTTP, so it is safe on every response.
        value = f"max-age={seconds}"
        if getattr(settings, "SECURE_HSTS_INCLUDE_SUBDOMAINS", False):
            value += "; includeSubDomains"
        if getattr(settings, "SECURE_HSTS_PRELOAD", False):
            value += "; preload"
        headers.append((b"strict-transport-security", value.encode()))
    policy = getattr(settings, "SECURE_REFERRER_POLICY", "same-origin")
    if policy:
        headers.append((b"referrer-policy", str(policy).encode()))
    return headers


class StaticFilesRouter:
    """`/static/…` files from WhiteNoise's index; every other request to `app`, untouched."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.files = WhiteNoiseMiddleware(get_response=None)
        self.prefix = self.files.static_prefix
        self.extra_headers = security_headers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            static_file = await self._find(scope["path"])
            if static_file is not None:
                await self._serve(static_file, scope, send)
                return
        await self.app(scope, receive, send)

    async def _find(self, path: str):
        if self.files.autorefresh:  # DEBUG: look on disk each time, off the loop
            return await asyncio.to_thread(self.files.find_file, path)
        return self.files.files.get(path)

    async def _serve(self, static_file, scope: Scope, send: Send) -> None:
        request_headers = {
            "HTTP_" + name.decode("latin-1").upper().replace("-", "_"): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        response = await asyncio.to_thread(
            static_file.get_response, scope["method"], request_headers
        )
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send(
            {
                "type": "http.response.start",
                "status": int(response.status),
                "headers": headers + self.extra_headers,
            }
        )
        file = response.file
        if file is None:
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            while True:
                chunk = await asyncio.to_thread(file.read, CHUNK)
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            file.close()
