"""The SSE streams through a real uvicorn, fed by events the test stores itself.

(The supervisor is not needed here: `append_events` and the Run state methods
are what it calls. End-to-end runs with a real worker are in test_live.py.)
"""

import contextlib
import queue
import shutil
import signal
import socket
import subprocess
import threading

import httpx
import psutil
import pytest
from api_helpers import SERVER_ENV, Fleet, Stream, bearer, raw_stream_request, wait_for

from tests.conftest import needs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(make_task, personas):
    return make_task("feed").start({}, user=personas["bob"])


@pytest.fixture
def http(api, tokens):
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as client:
        yield client


def log(run_id: int, *lines: str) -> None:
    from taskrunner.models import append_events

    append_events(run_id, [("log", "stdout", line, None) for line in lines])


def finish(run_id: int, status: str = "succeeded", exit_code: int | None = 0) -> None:
    from taskrunner.models import Run

    Run.objects.get(pk=run_id).finish(status, exit_code=exit_code)


def hub(http: httpx.Client) -> dict:
    return http.get("/api/debug/hub/").json()


def seqs(events) -> list[int]:
    return [ev.seq for ev in events if ev.id is not None]


def test_replay_then_live_then_end_then_204(http, run):
    log(run.pk, "one", "two")
    with Stream(http, f"/api/runs/{run.pk}/events/") as stream:
        headers = stream.response.headers
        assert stream.status_code == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in headers and "content-length" not in headers
        first = stream.next_event()
        assert (first.event, first.seq, first.data["status"]) == ("status", 1, "queued")
        assert [e.data["line"] for e in (stream.next_event(), stream.next_event())] == [
            "one",
            "two",
        ]
        log(run.pk, "three")  # live
        live = stream.next_event()
        assert (live.event, live.seq, live.data["line"], live.data["stream"]) == (
            "log",
            4,
            "three",
            "stdout",
        )
        keepalive = stream.next_event(comments=True)  # nothing happens for 0.5 s
        assert (keepalive.event, keepalive.data) == (":", "keepalive")
        finish(run.pk, "failed", 3)
        final = stream.next_event()
        assert (final.event, final.seq, final.data["status"]) == ("status", 5, "failed")
        end = stream.next_event()
        assert (end.event, end.id, end.data) == ("end", None, {"status": "failed", "exit_code": 3})
        with pytest.raises(EOFError):
            stream.next_event()

    url = f"/api/runs/{run.pk}/events/"
    assert http.get(url, headers={"Last-Event-ID": "5"}).status_code == 204
    assert http.get(f"{url}?after=5").status_code == 204
    assert http.get(f"{url}?after=99").status_code == 204
    with Stream(http, f"{url}?tail=2") as stream:
        assert [(e.event, e.seq) for e in stream.rest()] == [
            ("log", 4),
            ("status", 5),
            ("end", None),
        ]
    with Stream(http, f"{url}?after=3&tail=1") as stream:  # tail ignored with after
        assert seqs(stream.rest()) == [4, 5]
    with Stream(http, url) as stream:  # a new connection replays from the first
        assert seqs(stream.rest()) == [1, 2, 3, 4, 5]
    with Stream(http, "/api/tasks/feed/", headers={"Accept": "text/event-stream"}) as stream:
        assert seqs(stream.rest()) == [1, 2, 3, 4, 5]
    wait_for(lambda: hub(http)["subscribers"] == 0)


def test_reconnect_with_last_event_id_gets_every_event_exactly_once(http, run):
    got = []
    with Stream(http, f"/api/runs/{run.pk}/events/") as stream:
        for i in range(5):
            log(run.pk, *(f"a{i}.{j}" for j in range(50)))
        got += stream.until(lambda ev: ev.seq == 151)
    wait_for(lambda: hub(http)["subscribers"] == 0)  # the server noticed the disconnect
    for i in range(5):
        log(run.pk, *(f"b{i}.{j}" for j in range(50)))
    with Stream(http, f"/api/runs/{run.pk}/events/", {"Last-Event-ID": str(got[-1].seq)}) as s:
        got += s.until(lambda ev: ev.seq == 501)
        log(run.pk, "last")
        finish(run.pk)
        got += s.rest()
    assert seqs(got) == list(range(1, 504))
    assert got[-1].event == "end"


def test_reconnect_across_a_restart_of_the_web_server(start_server, tokens, run):
    first = start_server(env=SERVER_ENV)
    got = []
    http = httpx.Client(base_url=first.url, headers=bearer(tokens["bob"]), timeout=20)
    with http, Stream(http, f"/api/runs/{run.pk}/events/") as stream:
        log(run.pk, *(f"before {i}" for i in range(100)))
        got += stream.until(lambda ev: ev.seq == 60)
        # A restart: SIGTERM with a stream open must not hang (graceful timeout 2 s).
        first.signal(signal.SIGTERM)
        first.wait(timeout=15)
        with contextlib.suppress(httpx.HTTPError):  # cut mid-chunk, or closed
            got += stream.rest()  # (what is lost here comes again after Last-Event-ID)
    log(run.pk, *(f"while down {i}" for i in range(100)))
    second = start_server(env=SERVER_ENV, port=first.port)
    with httpx.Client(base_url=second.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        last = str(got[-1].seq)
        with Stream(http, f"/api/runs/{run.pk}/events/", {"Last-Event-ID": last}) as stream:
            got += stream.until(lambda ev: ev.seq == 201)
            finish(run.pk)
            got += stream.rest()
    assert seqs(got) == list(range(1, 203))


def test_stream_lifetime_is_capped_and_the_client_resumes(start_server, tokens, run):
    server = start_server(env={**SERVER_ENV, "TASKRUNNER_SSE_MAX_SECONDS": "1"})
    with httpx.Client(base_url=server.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        with Stream(http, f"/api/runs/{run.pk}/events/") as stream:
            got = stream.rest()  # closes by itself after 1 s, with no `end`
        assert seqs(got) == [1]
        log(run.pk, "later")
        with Stream(http, f"/api/runs/{run.pk}/events/", {"Last-Event-ID": "1"}) as stream:
            assert stream.next_event().data["line"] == "later"


def test_dashboard_feed_sends_active_runs_then_every_change(http, run, make_task, personas):
    from django.utils import timezone

    from taskrunner.models import Run

    done = make_task("done").start({}, user=personas["bob"])
    finish(done.pk)
    with Stream(http, "/api/events/") as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        first = stream.next_event()
        assert (first.event, first.id, first.data["id"], first.data["status"]) == (
            "run",
            None,
            run.pk,
            "queued",
        )
        created = make_task("new").start({}, user=personas["bob"])
        assert stream.until(lambda e: e.data["id"] == created.pk)[-1].data["status"] == "queued"
        Run.objects.filter(pk=run.pk).update(status="running", updated_at=timezone.now())
        assert stream.until(lambda e: e.data["id"] == run.pk)[-1].data["status"] == "running"
        progress = {"current": 1, "total": 4, "fraction": 0.25, "message": "a quarter"}
        Run.objects.filter(pk=run.pk).update(progress=progress, updated_at=timezone.now())
        assert stream.until(lambda e: e.data["id"] == run.pk)[-1].data["progress"] == progress
        Run.objects.filter(pk=run.pk).update(
            cpu_percent=12.5, memory_bytes=1234, updated_at=timezone.now()
        )
        sampled = stream.until(lambda e: e.data["id"] == run.pk)[-1].data
        assert (sampled["cpu_percent"], sampled["memory_bytes"]) == (12.5, 1234)
        finish(run.pk)
        assert stream.until(lambda e: e.data["id"] == run.pk)[-1].data["status"] == "succeeded"
        assert all(ev.id is None for ev in stream.seen)
    wait_for(lambda: hub(http)["subscribers"] == 0)


def test_a_slow_client_catches_up_from_the_database_without_growing_memory(
    start_server, tokens, run
):
    server = start_server(env={**SERVER_ENV, "TASKRUNNER_SSE_CLIENT_BUFFER_BYTES": "65536"})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow, small reader
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(raw_stream_request("127.0.0.1", server.port, f"/api/runs/{run.pk}/events/",
                                    tokens["bob"]))  # fmt: skip
    with httpx.Client(base_url=server.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        wait_for(lambda: hub(http)["run_subscribers"] == 1)
        line = "x" * 200
        for batch in range(10):
            log(run.pk, *(f"{batch} {i} {line}" for i in range(500)))
        wait_for(lambda: hub(http)["overflows"] >= 1)
        assert hub(http)["buffered_bytes"] <= 65536 + 150_000  # one fetch chunk at most
        finish(run.pk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # now read fast
        sock.settimeout(20)
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
        sock.close()
        ids = [int(line[4:]) for line in data.decode().split("\n") if line.startswith("id: ")]
        assert ids == list(range(1, 5_003))
        assert data.rstrip().endswith(b'event: end\ndata: {"status": "succeeded", "exit_code": 0}')
        wait_for(lambda: hub(http)["subscribers"] == 0)


def db_connections() -> int | None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_200_clients_share_one_hub(api, http, tokens, run):
    """Every client gets every event; queries, threads and connections do not grow."""
    server = psutil.Process(api.pid)
    idle_tasks = hub(http)["tasks"]
    fleet = Fleet(api.url, f"/api/runs/{run.pk}/events/", tokens["bob"])
    try:
        fleet.add(1)
        wait_for(lambda: fleet.count_at_least(1) == 1)

        def measure(clients: int) -> int:
            before = hub(http)["queries"]
            for batch in range(10):
                last = _last_seq(run.pk) + 20
                log(run.pk, *(f"b{batch} l{i}" for i in range(20)))
                wait_for(lambda last=last: fleet.count_at_least(last) == clients, 20)
            return hub(http)["queries"] - before

        one = measure(1)
        threads_one, conns_one = server.num_threads(), db_connections()

        fleet.add(199)
        try:
            wait_for(lambda: fleet.count_at_least(_last_seq(run.pk)) == 200, 30)
        except AssertionError:
            got = sorted(len(s) for s in fleet.seqs)
            raise AssertionError(f"{fleet.errors[:3]} {got[:5]} {got[-5:]} {hub(http)}") from None
        wait_for(lambda: server.num_threads() <= threads_one + 2, 10)
        if conns_one is not None:
            # The server's pool (at most 10) + its LISTEN connection + this test
            # process's two: bounded, not one per client.
            try:
                wait_for(lambda: db_connections() <= 14, 10)
            except AssertionError:
                raise AssertionError(f"{conns_one} -> {db_connections()} {_pg_who()}") from None
        assert hub(http)["run_subscribers"] == 200
        many = measure(200)
        assert many <= one * 1.5 + 4, (one, many)
        assert server.num_threads() <= threads_one + 2
        finish(run.pk)
        wait_for(lambda: all(fleet.ended), 30)
        assert not fleet.errors
        expected = list(range(1, _last_seq(run.pk) + 1))
        assert all(seqs == expected for seqs in fleet.seqs)
        state = wait_for(lambda: (h := hub(http))["subscribers"] == 0 and h, 10)
        assert not state["reader_running"]
        assert state["buffered_bytes"] == 0
        assert state["tasks"] <= idle_tasks  # no task left behind by 200 streams
        print(
            f"hub queries per 10 batches: 1 client {one}, 200 clients {many}; threads "
            f"{threads_one} -> {server.num_threads()}; db connections {conns_one}"
        )
    finally:
        fleet.close()


def _pg_who():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, application_name, state, left(query, 60) FROM pg_stat_activity "
            "WHERE datname = current_database()"
        )
        return cursor.fetchall()


def _last_seq(run_id: int) -> int:
    from taskrunner.models import Run

    return Run.objects.values_list("last_seq", flat=True).get(pk=run_id)


def test_curl_prints_events_as_they_happen(api, tokens, run):
    needs("curl", shutil.which("curl") is not None)
    curl = subprocess.Popen(
        ["curl", "-sN", "-H", f"Authorization: Bearer {tokens['bob']}",
         f"{api.url}/api/runs/{run.pk}/events/"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(raw.decode()) for raw in curl.stdout], daemon=True
    )
    reader.start()

    def next_data(timeout: float = 10) -> str:
        while True:
            line = lines.get(timeout=timeout)
            if line.startswith("data: "):
                return line

    try:
        assert '"status": "queued"' in next_data()
        for word in ("alpha", "beta", "gamma"):
            log(run.pk, word)
            assert f'"line": "{word}"' in next_data()
    finally:
        curl.kill()
        curl.wait(10)
        reader.join(10)
        curl.stdout.close()


def test_streams_under_wsgi_refuse_clearly_instead_of_hanging(personas, run):
    from django.test import Client

    client = Client()
    client.force_login(personas["bob"])
    for url in (f"/api/runs/{run.pk}/events/", "/api/events/"):
        response = client.get(url)
        assert response.status_code == 501
        assert response.json()["error"]["code"] == "asgi_required"
        assert "uvicorn" in response.json()["error"]["message"]
    log(run.pk, "plain text works")
    text = b"".join(client.get(f"/api/runs/{run.pk}/log/").streaming_content)
    assert text == b"plain text works\n"
