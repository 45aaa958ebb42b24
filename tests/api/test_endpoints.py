"""The JSON endpoints over real HTTP (no worker: runs stay queued unless a test moves them)."""

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

RUN_KEYS = {
    "id", "task", "status", "params", "attempt", "progress", "result", "error", "exit_code",
    "created_at", "started_at", "finished_at", "requested_by", "pid", "actions", "url",
    "events_url", "page_url",
}  # fmt: skip
TASK_KEYS = {
    "name", "title", "description", "params", "max_concurrent", "timeout", "grace", "enabled",
    "active_runs", "last_run",
}  # fmt: skip


@pytest.fixture
def bob(as_user):
    return as_user["bob"]


@pytest.fixture
def crawl(make_task):
    return make_task(
        "crawl",
        params=[
            {"name": "region", "type": "str", "default": "eu", "choices": ["eu", "us"]},
            {"name": "depth", "type": "int", "default": None},
        ],
    )


def set_status(run_id: int, status: str) -> None:
    """Pretend a worker moved the run (these tests run without one)."""
    from taskrunner.models import Run

    Run.objects.filter(pk=run_id).update(status=status)


def test_queue_a_run_answers_202_at_once_with_the_run_and_its_location(bob, crawl):
    # "At once": answered with the run still queued (no worker runs here);
    # how fast is the benchmark's business (start latency).
    response = bob.post("/api/tasks/crawl/runs/", json={"params": {"depth": "3"}})
    assert response.status_code == 202, response.text
    run = response.json()
    assert set(run) >= RUN_KEYS
    assert response.headers["Location"] == run["url"] == f"/api/runs/{run['id']}/"
    assert run["events_url"] == f"/api/runs/{run['id']}/events/"
    assert run["status"] == "queued"
    assert run["params"] == {"region": "eu", "depth": 3}
    assert run["requested_by"] == "bob"
    assert [(a["action"], a["by"], a["via"]) for a in run["actions"]] == [("start", "bob", "api")]
    assert bob.get(run["url"]).json()["id"] == run["id"]

    task = bob.get("/api/tasks/crawl/").json()
    assert set(task) >= TASK_KEYS
    assert [r["id"] for r in task["active_runs"]] == [run["id"]]
    assert task["last_run"]["id"] == run["id"]
    assert task["params"][1] == {
        "name": "depth", "type": "int", "default": None, "required": True, "choices": None,
    }  # fmt: skip
    listed = bob.get("/api/tasks/").json()["tasks"]
    assert [t["name"] for t in listed] == ["crawl"]


def test_runs_list_filters_and_pages_newest_first(bob, make_task, personas):
    from taskrunner.models import RunStatus

    a, b = make_task("a"), make_task("b")
    ids = [task.start({}, user=personas["bob"]).pk for task in (a, b, a, b, a)]
    set_status(ids[0], RunStatus.FAILED)

    everything = bob.get("/api/runs/").json()
    assert [r["id"] for r in everything["runs"]] == ids[::-1]
    assert everything["next"] is None

    seen, url = [], "/api/runs/?task=a&limit=2"
    while url:
        page = bob.get(url).json()
        seen += [r["id"] for r in page["runs"]]
        url = page["next"]
        if url:
            assert "task=a" in url and "limit=2" in url
    assert seen == [ids[4], ids[2], ids[0]]

    assert [r["id"] for r in bob.get("/api/runs/?status=failed").json()["runs"]] == [ids[0]]
    both = bob.get("/api/runs/?status=queued,failed&task=a").json()["runs"]
    assert [r["id"] for r in both] == [ids[4], ids[2], ids[0]]
    assert [r["id"] for r in bob.get(f"/api/runs/?before={ids[2]}").json()["runs"]] == ids[:2][::-1]
    assert bob.get("/api/runs/?task=nope").json() == {"runs": [], "next": None}


def test_control_requests_follow_the_runs_state(bob, crawl, personas):
    from taskrunner.models import Run, RunAction, RunStatus

    queued = bob.post("/api/tasks/crawl/runs/", json={"params": {"depth": 1}}).json()
    url = queued["url"]
    for action in ("pause", "resume", "input"):
        body = {"data": "x"} if action == "input" else None
        response = bob.post(f"{url}{action}/", json=body)
        assert response.status_code == 409, (action, response.text)
        assert response.json()["error"]["code"] == "conflict"

    set_status(queued["id"], RunStatus.RUNNING)
    assert bob.post(f"{url}resume/").status_code == 409
    paused = bob.post(f"{url}pause/")
    assert paused.status_code == 202
    assert paused.json()["actions"][-1] == {**paused.json()["actions"][-1], "action": "pause"}
    assert bob.post(f"{url}input/", json={"data": "hello\n"}).status_code == 202
    assert RunAction.objects.filter(run_id=queued["id"], action="input").get().data == "hello"

    set_status(queued["id"], RunStatus.QUEUED)
    aborted = bob.delete(url)
    assert aborted.status_code == 202
    assert Run.objects.get(pk=queued["id"]).status == RunStatus.ABORTED
    assert bob.get(url).json()["status"] == "aborted"
    assert bob.post(f"{url}abort/").status_code == 409
    assert [a["action"] for a in bob.get(url).json()["actions"]] == [
        "start", "pause", "input", "abort",
    ]  # fmt: skip


def test_task_scoped_shorthand(bob, crawl):
    from taskrunner.models import Run, RunStatus

    started = bob.post("/api/tasks/crawl/", json={"action": "start", "params": {"depth": 2}})
    assert started.status_code == 202
    assert started.headers["Location"] == started.json()["url"]
    assert bob.post("/api/tasks/crawl/", json={"action": "pause"}).status_code == 409

    set_status(started.json()["id"], RunStatus.RUNNING)
    paused = bob.post("/api/tasks/crawl/", json={"action": "pause"})
    assert paused.status_code == 202
    assert [r["id"] for r in paused.json()["runs"]] == [started.json()["id"]]
    assert bob.post("/api/tasks/crawl/", json={"action": "resume"}).status_code == 409

    second = bob.post("/api/tasks/crawl/runs/", json={"params": {"depth": 1}}).json()
    aborted = bob.delete("/api/tasks/crawl/")
    assert aborted.status_code == 202
    assert {r["id"] for r in aborted.json()["runs"]} == {started.json()["id"], second["id"]}
    assert Run.objects.get(pk=second["id"]).status == RunStatus.ABORTED
    set_status(started.json()["id"], RunStatus.ABORTED)  # as the worker would
    assert bob.delete("/api/tasks/crawl/").status_code == 409  # nothing left to abort

    bad = bob.post("/api/tasks/crawl/", json={"action": "explode"})
    assert bad.status_code == 400
    assert "action" in bad.json()["error"]["fields"]


def test_event_list_and_log(bob, make_task, personas):
    from taskrunner.models import append_events
    from taskrunner.serializers import event_payload

    run = make_task("talk").start({}, user=personas["bob"])
    append_events(
        run.pk,
        [("log", "stdout", f"line {i}", None) for i in range(1, 11)]
        + [("log", "stderr", "a very long ", {"continued": True})]
        + [("log", "stderr", "line", None), ("progress", "", "", {"current": 1, "total": 2})],
    )
    page = bob.get(f"/api/runs/{run.pk}/event-list/").json()
    assert page["first_seq"] == 1
    assert [e["seq"] for e in page["events"]] == list(range(1, 15))
    from taskrunner.events import store

    stored = {e.seq: e for b in store.iter_after(run.pk, 0) for e in b}
    for item in page["events"]:
        assert item["event"] == stored[item["seq"]].kind
        assert item["data"] == event_payload(stored[item["seq"]])

    older = bob.get(f"/api/runs/{run.pk}/event-list/?before=12&limit=3").json()
    assert [e["seq"] for e in older["events"]] == [9, 10, 11]
    assert bob.get(f"/api/runs/{run.pk}/event-list/?before=1").json()["events"] == []

    log = bob.get(f"/api/runs/{run.pk}/log/")
    assert log.status_code == 200
    assert log.headers["content-type"].startswith("text/plain")
    assert log.text == "".join(f"line {i}\n" for i in range(1, 11)) + "a very long line\n"
    download = bob.get(f"/api/runs/{run.pk}/log/?download=1")
    assert download.headers["content-disposition"] == f'attachment; filename="run-{run.pk}.log"'


def error(response: httpx.Response) -> dict:
    assert response.headers["content-type"] == "application/json", response.text
    return response.json()["error"]


def test_bad_input_gets_the_contracts_json_error_never_a_500(bob, crawl, make_task, personas):
    from taskrunner.models import RunStatus

    make_task("off", enabled=False)
    run = crawl.start({"depth": 1}, user=personas["bob"])
    set_status(run.pk, RunStatus.RUNNING)
    runs = "/api/tasks/crawl/runs/"
    huge_line = b'{"data": "' + b"x" * (1 << 20) + b'"}'
    raw = {"headers": {"Content-Type": "application/json"}}
    cases = [
        # (method, path, kwargs, status, code, fields expected)
        ("POST", runs, {"content": b"{not json", **raw}, 400, "invalid", None),
        ("POST", runs, {"content": b"\xff\xfe", **raw}, 400, "invalid", None),
        ("POST", runs, {"json": [1, 2]}, 400, "invalid", None),
        ("POST", runs, {"json": "text"}, 400, "invalid", None),
        ("POST", runs, {"json": {"params": {"depth": "x"}}}, 400, "invalid", {"params.depth"}),
        ("POST", runs, {"json": {"params": {}}}, 400, "invalid", {"params.depth"}),
        ("POST", runs, {"json": {"params": {"depth": 1, "zzz": 1}}}, 400, "invalid",
         {"params.zzz"}),
        ("POST", runs, {"json": {"params": {"depth": 1, "region": "mars"}}}, 400, "invalid",
         {"params.region"}),
        ("POST", runs, {"json": {"params": [1]}}, 400, "invalid", {"params"}),
        ("POST", runs, {"json": {"params": {"depth": 1}, "oops": 1}}, 400, "invalid", {"oops"}),
        ("POST", runs, {"content": b'{"params": {"depth": NaN}}', **raw}, 400, "invalid", None),
        ("POST", runs, {"content": b'{"params": {"depth": 1e400}}', **raw}, 400, "invalid", None),
        ("POST", runs, {"content": b'{"params": {"region": "\\u0000"}}', **raw}, 400, "invalid",
         None),
        ("POST", runs, {"content": b'{"params": {"region": "\\ud800"}}', **raw}, 400, "invalid",
         None),
        ("POST", runs, {"content": b"[" * 100_000 + b"]" * 100_000, **raw}, 400, "invalid", None),
        ("POST", runs, {"content": b" " * (1024 * 1024 + 1), **raw}, 413, "too_large", None),
        ("POST", f"/api/runs/{run.pk}/input/", {"content": huge_line},
         413, "too_large", None),
        ("POST", f"/api/runs/{run.pk}/input/", {"json": {"data": 5}}, 400, "invalid", {"data"}),
        ("POST", f"/api/runs/{run.pk}/input/", {"json": {}}, 400, "invalid", {"data"}),
        ("POST", f"/api/runs/{run.pk}/input/", {"json": {"data": "a\nb"}}, 400, "invalid",
         {"data"}),
        ("POST", f"/api/runs/{run.pk}/input/", {"json": {"data": "\x00"}}, 400, "invalid", None),
        ("POST", f"/api/runs/{run.pk}/pause/", {"content": b"{", **raw}, 400, "invalid", None),
        ("POST", "/api/tasks/off/runs/", {"json": {}}, 409, "conflict", None),
        ("POST", "/api/tasks/nope/runs/", {"json": {}}, 404, "not_found", None),
        ("GET", "/api/tasks/nope/", {}, 404, "not_found", None),
        ("GET", "/api/tasks/not a slug/", {}, 404, "not_found", None),
        ("GET", "/api/runs/999999/", {}, 404, "not_found", None),
        ("GET", "/api/runs/99999999999999999999999999/", {}, 404, "not_found", None),
        ("GET", "/api/runs/0/", {}, 404, "not_found", None),
        ("GET", "/api/runs/abc/", {}, 404, "not_found", None),
        ("GET", "/api/runs/99999999999999999999999999/events/", {}, 404, "not_found", None),
        ("GET", "/api/runs/999999/events/", {}, 404, "not_found", None),
        ("GET", "/api/runs/999999/log/", {}, 404, "not_found", None),
        ("GET", "/api/runs/999999/event-list/", {}, 404, "not_found", None),
        ("POST", "/api/runs/999999/pause/", {}, 404, "not_found", None),
        ("GET", "/api/runs", {}, 404, "not_found", None),
        ("GET", "/api/runs/?limit=0", {}, 400, "invalid", {"limit"}),
        ("GET", "/api/runs/?limit=501", {}, 400, "invalid", {"limit"}),
        ("GET", "/api/runs/?limit=ten", {}, 400, "invalid", {"limit"}),
        ("GET", "/api/runs/?before=-1", {}, 400, "invalid", {"before"}),
        ("GET", "/api/runs/?before=99999999999999999999999", {}, 400, "invalid", {"before"}),
        ("GET", "/api/runs/?status=sleeping", {}, 400, "invalid", {"status"}),
        ("GET", f"/api/runs/{run.pk}/event-list/?limit=5001", {}, 400, "invalid", {"limit"}),
        ("GET", f"/api/runs/{run.pk}/event-list/?before=x", {}, 400, "invalid", {"before"}),
        ("GET", f"/api/runs/{run.pk}/events/?after=x", {}, 400, "invalid", {"after"}),
        ("GET", f"/api/runs/{run.pk}/events/?after=-2", {}, 400, "invalid", {"after"}),
        ("GET", f"/api/runs/{run.pk}/events/?tail=x", {}, 400, "invalid", {"tail"}),
        ("GET", f"/api/runs/{run.pk}/events/", {"headers": {"Last-Event-ID": "x"}}, 400,
         "invalid", {"Last-Event-ID"}),
        ("PUT", f"/api/runs/{run.pk}/", {}, 405, "method_not_allowed", None),
        ("GET", f"/api/runs/{run.pk}/pause/", {}, 405, "method_not_allowed", None),
        ("POST", "/api/tasks/", {}, 405, "method_not_allowed", None),
        ("PATCH", "/api/tasks/crawl/", {}, 405, "method_not_allowed", None),
        ("POST", f"/api/runs/{run.pk}/events/", {}, 405, "method_not_allowed", None),
        ("DELETE", "/api/events/", {}, 405, "method_not_allowed", None),
    ]  # fmt: skip
    problems = []
    for method, path, kwargs, status, code, fields in cases:
        response = bob.request(method, path, **kwargs)
        try:
            assert response.status_code == status, response.text[:300]
            body = error(response)
            assert body["code"] == code
            assert body["message"]
            if fields:
                assert set(body["fields"]) == fields
            if status == 405:
                assert "Allow" in response.headers
        except AssertionError as exc:
            problems.append(f"{method} {path[:80]}: {exc}")
    assert not problems, "\n".join(problems)
    assert bob.get("/api/debug/hub/").status_code == 200  # the server is still fine
