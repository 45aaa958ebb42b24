"""End to end over HTTP: a real uvicorn, a real worker, real child processes."""

import time

import httpx
import psutil
import pytest
from api_helpers import SERVER_ENV, Stream, bearer, is_status, numbered, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def line_number(ev) -> int | None:
    words = ev.data["line"].split()
    return int(words[1]) if words[0] == "line" else None


def line_numbers(events) -> list[int]:
    return [
        int(ev.data["line"].split()[1])
        for ev in events
        if ev.event == "log" and ev.data["line"].startswith("line ")
    ]


def group_stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def test_full_life_of_a_run_over_http(api, tokens, make_task, worker):
    make_task("ticker", argv=numbered("--interval", "0.02", "--stamp"), grace=2)
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        response = http.post("/api/tasks/ticker/runs/", json={})
        assert response.status_code == 202
        run = response.json()
        assert (run["status"], run["pid"]) == ("queued", None)  # answered before the child ran

        with Stream(http, run["events_url"]) as stream:
            got = stream.until(is_status("running"))
            got += stream.until(lambda ev: ev.event == "log" and line_number(ev) == 5)

            assert http.post(f"{run['url']}pause/").status_code == 202
            got += stream.until(is_status("paused"))
            paused_event = got[-1]
            assert paused_event.data["actions"][-1]["action"] == "pause"
            assert paused_event.data["actions"][-1]["by"] == "bob"
            pid = paused_event.data["pid"]
            wait_for(lambda: group_stopped(pid), 5)
            stopped_at = time.time()
            # Each line carries the time it was printed: none may fall between
            # the moment the group was seen stopped and the resume.
            resumed_at = time.time()
            assert http.post(f"{run['url']}resume/").status_code == 202
            while_paused = stream.until(is_status("running"))
            got += while_paused
            last = line_numbers(got)[-1]
            got += stream.until(lambda ev: ev.event == "log" and line_number(ev) == last + 5)

            assert http.post(f"{run['url']}abort/").status_code == 202
            got += stream.rest()
        assert got[-1].event == "end"
        assert got[-1].data["status"] == "aborted"
        assert got[-2].event == "status" and got[-2].data["status"] == "aborted"
        numbers = line_numbers(got)
        assert numbers == list(range(1, len(numbers) + 1))  # none lost, none repeated
        printed = [
            float(ev.data["line"].split()[2])
            for ev in got
            if ev.event == "log" and ev.data["stream"] == "stdout"
        ]
        assert not [t for t in printed if stopped_at < t < resumed_at], "printed while paused"
        seqs = [ev.seq for ev in got if ev.id is not None]
        assert seqs == list(range(1, len(seqs) + 1))

        reconnect = http.get(run["events_url"], headers={"Last-Event-ID": str(seqs[-1])})
        assert reconnect.status_code == 204
        final = http.get(run["url"]).json()
        assert final["status"] == "aborted"
        assert [a["action"] for a in final["actions"]] == ["start", "pause", "resume", "abort"]


def test_a_run_that_ends_by_itself_and_the_task_stream(api, tokens, make_task, worker):
    make_task("short", argv=numbered("--interval", "0", "--count", "300", "--exit-code", "3"))
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        run = http.post("/api/tasks/short/", json={"action": "start"}).json()
        accept = {"Accept": "text/event-stream"}
        with Stream(http, "/api/tasks/short/", accept) as stream:
            events = stream.rest()
        assert line_numbers(events) == list(range(1, 301))
        assert events[-1].data == {"status": "failed", "exit_code": 3}
        assert http.get(run["url"]).json()["exit_code"] == 3


def test_disconnect_mid_run_and_reconnect_with_last_event_id(api, tokens, make_task, worker):
    make_task("ticker", argv=numbered("--interval", "0.005", "--count", "400"))
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        run = http.post("/api/tasks/ticker/runs/").json()
        with Stream(http, run["events_url"]) as stream:
            got = stream.until(lambda ev: ev.event == "log" and ev.data["line"] == "line 50")
        for _ in range(3):  # twice more, each time a little later
            headers = {"Last-Event-ID": str(got[-1].seq)}
            with Stream(http, run["events_url"], headers) as stream:
                got += [stream.next_event() for _ in range(40)]
        with Stream(http, run["events_url"], {"Last-Event-ID": str(got[-1].seq)}) as stream:
            got += stream.rest()
    assert line_numbers(got) == list(range(1, 401))
    seqs = [ev.seq for ev in got if ev.id is not None]
    assert seqs == list(range(1, len(seqs) + 1))
    assert got[-1].data["status"] == "succeeded"


def test_two_uvicorn_workers_share_control_and_streams(start_server, tokens, make_task, worker):
    """A pause sent through one web process is applied; a stream on the other sees it."""
    make_task("ticker", argv=numbered("--interval", "0.02"), grace=2)
    server = start_server("--workers", "2", env=SERVER_ENV)

    def pid_of(client: httpx.Client) -> int:
        return client.get("/api/debug/hub/").json()["pid"]

    clients = []
    try:
        by_pid: dict[int, httpx.Client] = {}

        def two_processes():
            # Keep-alive pins a client to the process that accepted its connection.
            client = httpx.Client(base_url=server.url, headers=bearer(tokens["bob"]), timeout=20)
            clients.append(client)
            by_pid.setdefault(pid_of(client), client)
            return len(by_pid) == 2

        wait_for(two_processes, 20, interval=0)
        (pid_a, viewer), (pid_b, controller) = sorted(by_pid.items())
        assert pid_a != pid_b
        run = controller.post("/api/tasks/ticker/runs/").json()
        with Stream(viewer, run["events_url"]) as stream:
            stream.until(is_status("running"))
            assert pid_of(controller) == pid_b
            assert controller.post(f"{run['url']}pause/").status_code == 202
            stream.until(is_status("paused"))
            assert controller.post(f"{run['url']}abort/").status_code == 202
            assert stream.rest()[-1].data["status"] == "aborted"
        assert pid_of(viewer) == pid_a
    finally:
        for client in clients:
            client.close()
