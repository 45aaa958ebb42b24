"""Issue 15, item 6: a staff user cannot make the web process allocate gigabytes.

The attack, replayed through a real uvicorn server: a run with long lines
(64 KiB each), one event-list with the biggest `limit`, and six SSE
connections from raw sockets that send their request and never read. The
server's RSS (psutil) must stay within 100 MB of what it was idle; the
event-list page stops at its byte budget; a seventh stream for the same user
beyond the cap gets the `429 too_many` JSON.
"""

import socket

import httpx
import psutil
import pytest

from tests.conftest import wait_for

LONG = 64 * 1024
LINES = 3000  # ~200 MB of log, stored
CAP = 6
MB = 1024 * 1024


def _fill(run_id: int) -> None:
    from taskrunner.models import append_events

    for start in range(0, LINES, 200):
        append_events(
            run_id,
            [
                ("log", "stdout", f"{i:08d}" + "x" * (LONG - 8), None)
                for i in range(start, start + 200)
            ],
        )


def _stuck_stream(port: int, path: str, token: str) -> socket.socket:
    """A client that asks for a stream and never reads a byte of it."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return sock


@pytest.mark.timeout(300)
def test_long_lines_big_pages_and_stuck_streams_stay_within_100_mb(
    transactional_db, start_server, personas
):
    from taskrunner.models import ApiToken, Task

    task = Task.objects.create(name="long-lines", argv=["true"], params=[])
    run = task.start({}, user=personas["alice"])
    _fill(run.pk)
    token = ApiToken.create_for(personas["bob"])[1]
    server = start_server(
        env={
            "TASKRUNNER_SSE_MAX_STREAMS_PER_USER": str(CAP),
            "TASKRUNNER_SSE_KEEPALIVE_SECONDS": "0.5",
        }
    )
    proc = psutil.Process(server.proc.pid)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        assert http.get("/api/tasks/").status_code == 200  # warm: the idle figure
        idle = proc.memory_info().rss

        page = http.get(f"/api/runs/{run.pk}/event-list/?limit=5000")
        assert page.status_code == 200
        events = page.json()["events"]
        # Bounded in bytes, not 5000 events of 64 KiB: the newest ones, in order.
        assert 0 < len(events) < 100
        assert events[-1]["seq"] == 1 + LINES  # the start's status event, then the lines
        assert len(page.content) < 8 * MB

        socks = [
            _stuck_stream(server.port, f"/api/runs/{run.pk}/events/", token) for _ in range(CAP)
        ]
        try:
            hub = lambda: http.get("/api/debug/hub/").json()  # noqa: E731
            # Every stuck stream subscribed and got its first (bounded) read...
            wait_for(
                lambda: hub()["run_subscribers"] == CAP and hub()["catchup_reads"] >= CAP,
                timeout=60,
            )
            # ...then the run goes on: the hub feeds their buffers until they overflow.
            _fill(run.pk)
            # (Or the memory already went past the bound: the assertion below says so.)
            wait_for(
                lambda: hub()["overflows"] >= CAP or proc.memory_info().rss - idle > 100 * MB,
                timeout=120,
            )
            peak = proc.memory_info().rss
            print(f"idle {idle / MB:.0f} MB, under attack {peak / MB:.0f} MB")
            assert peak - idle < 100 * MB

            over = http.get(f"/api/runs/{run.pk}/events/")
            assert over.status_code == 429
            assert over.json()["error"]["code"] == "too_many"
        finally:
            for sock in socks:
                sock.close()
        # The slots come back once the clients are gone.
        wait_for(lambda: hub()["run_subscribers"] == 0, timeout=60)
        with http.stream("GET", f"/api/runs/{run.pk}/events/?tail=1") as again:
            assert again.status_code == 200
    assert proc.memory_info().rss - idle < 100 * MB
