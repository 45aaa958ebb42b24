"""The web's request threads: sync views borrow pooled threads, streams keep Django's own.

Through a real uvicorn: many API requests one after another, and many at once,
leave the server with a bounded number of threads (the pool keeps at most
`IDLE_THREADS`); a stream that lets go of its thread while it waits does not
spoil the pool for the requests after it.
"""

import threading

import httpx
import psutil
import pytest
from api_helpers import Stream, bearer, wait_for

from backoffice.handler import IDLE_THREADS

pytestmark = pytest.mark.django_db(transaction=True)


def test_sync_views_reuse_a_bounded_pool_of_threads(api, tokens, make_task):
    server = psutil.Process(api.pid)
    task = make_task("pooled", ["true"])
    run = task.start({})
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        assert http.get("/api/").status_code == 200
        before = server.num_threads()
        for _ in range(60):
            assert http.get(f"/api/runs/{run.pk}/").status_code == 200
        # No thread per request (a few helper threads may start lazily).
        assert server.num_threads() <= before + 4

        errors: list[str] = []

        def hammer() -> None:
            with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as own:
                for _ in range(10):
                    response = own.get(f"/api/runs/{run.pk}/")
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")

        workers = [threading.Thread(target=hammer) for _ in range(IDLE_THREADS + 8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert errors == []
        # Past the burst, only the pool's idle threads are kept.
        wait_for(lambda: server.num_threads() <= before + IDLE_THREADS + 4)


def test_requests_after_a_stream_still_answer(api, tokens, make_task):
    """A stream shuts its request's executor down while it waits (hub.release_request_thread):
    that executor must never be lent to another request."""
    run = make_task("streamed", ["true"]).start({})
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        for _ in range(3):
            with Stream(http, f"/api/runs/{run.pk}/events/") as stream:
                assert stream.next_event().event == "status"  # queued: it waits from here
                for _ in range(IDLE_THREADS + 4):
                    assert http.get(f"/api/runs/{run.pk}/").status_code == 200
            for _ in range(IDLE_THREADS + 4):
                assert http.get(f"/api/runs/{run.pk}/").status_code == 200


def test_pipelined_requests_on_one_connection_each_get_their_answer(api, tokens, make_task):
    """uvicorn starts a pipelined request from inside the previous request's task:
    each must still run in a context (and on a thread) of its own."""
    import socket

    run = make_task("pipelined", ["true"]).start({})
    paths = ["/api/tasks/nope/", f"/api/runs/{run.pk}/", "/api/", "/api/tasks/nope/"] * 5
    head = f"Host: 127.0.0.1:{api.port}\r\nAuthorization: Bearer {tokens['bob']}\r\n"
    requests = "".join(f"GET {path} HTTP/1.1\r\n{head}\r\n" for path in paths)
    with socket.create_connection(("127.0.0.1", api.port), timeout=20) as sock:
        sock.sendall(requests.encode())  # all at once: the server reads them together
        with sock.makefile("rb") as answers:
            statuses = []
            for _ in paths:
                status = int(answers.readline().split()[1])
                length = 0
                while (line := answers.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                answers.read(length)
                statuses.append(status)
    assert statuses == [404, 200, 200, 404] * 5
