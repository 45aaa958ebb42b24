"""A database with something of everything the API describes, for the schema and fuzz tests.

Tasks (one with declared parameters, one whose runs fail), finished runs with
a result, progress, messages and artifacts, a failed run, a run that keeps
running (so control endpoints have something to act on), and schedules.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from api_helpers import SERVER_ENV, client, numbered, wait_for

MAKER = str(Path(__file__).resolve().parent.parent / "children" / "artifact_maker.py")

REPORTER = [
    sys.executable,
    "-c",
    "import sys; print('::progress 1/2 half way'); print('::message note {\"k\": 1}');"
    "print('to stderr', file=sys.stderr); print('::result {\"rows\": 3}'); print('done')",
]


@dataclass
class Populated:
    api: object  # the Server
    http: httpx.Client  # alice's bearer client
    token: str
    finished: int  # a succeeded run with a result and progress
    with_artifacts: int
    failed: int
    running: int
    schedule: int


def artifact_env(tmp_path: Path) -> dict[str, str]:
    return {
        "TASKRUNNER_ARTIFACTS_ROOT": str(tmp_path / "store"),
        "TASKRUNNER_ARTIFACTS_WORK_DIR": str(tmp_path / "work"),
    }


def _finish(http: httpx.Client, run_id: int, *statuses: str) -> dict:
    def done():
        run = http.get(f"/api/runs/{run_id}/").json()
        return run if run["status"] in statuses else None

    return wait_for(done, timeout=60)


def _start(http: httpx.Client, task: str, body: dict | None = None) -> int:
    response = http.post(f"/api/tasks/{task}/runs/", json=body or {})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def populate(start_server, start_worker, make_task, tokens, tmp_path, **server_env) -> Populated:
    env = artifact_env(tmp_path)
    api = start_server(env={**SERVER_ENV, **env, **server_env})
    start_worker(env=env)
    make_task(
        "report",
        argv=REPORTER,
        params=[
            {"name": "region", "type": "str", "default": "eu", "choices": ["eu", "us"]},
            {"name": "limit", "type": "int", "default": 10},
            {"name": "dry", "type": "bool", "default": False},
        ],
    )
    make_task("maker", argv=[sys.executable, MAKER, "three"])
    make_task("failing", argv=[sys.executable, "-c", "raise SystemExit(3)"])
    make_task("endless", argv=numbered("--interval", "0.5"), grace=1.0, max_concurrent=5)
    http = client(api.url, tokens["alice"])
    try:
        return _fill(api, http, tokens["alice"])
    except BaseException:
        http.close()
        raise


def _fill(api, http: httpx.Client, token: str) -> Populated:
    finished = _start(http, "report", {"params": {"region": "us"}})
    with_artifacts = _start(http, "maker")
    failed = _start(http, "failing")
    running = _start(http, "endless")
    _finish(http, finished, "succeeded")
    _finish(http, with_artifacts, "succeeded")
    _finish(http, failed, "failed")
    _finish(http, running, "running")
    made = http.post("/api/tasks/report/schedules/", json={"every": 3600, "params": {"dry": True}})
    assert made.status_code == 201, made.text
    http.post("/api/tasks/report/schedules/", json={"cron": "@daily", "timezone": "Europe/Paris"})
    return Populated(
        api=api,
        http=http,
        token=token,
        finished=finished,
        with_artifacts=with_artifacts,
        failed=failed,
        running=running,
        schedule=made.json()["id"],
    )
