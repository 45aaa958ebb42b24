"""A database made by the row-per-event code keeps every line after `migrate`.

The database is taken back to the migration before the event store, filled
with old-style rows (one per event) through that state's models, migrated
forward, and every event is read back through the real SSE stream of a real
uvicorn server, in order, with its seq, stream, time and `continued` mark;
a resume landing inside a packed chunk gives exactly the events after it.
"""

import json
from datetime import UTC, datetime, timedelta

import httpx
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("taskrunner", "0003_task_pass_env")
LINES = 9_000  # more than two chunks' worth


def _migrate(target: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    return executor


def _fill_old_style(apps) -> tuple[int, list[dict]]:
    """One finished run with LINES log lines between its statuses, stored the old way."""
    Task = apps.get_model("taskrunner", "Task")
    Run = apps.get_model("taskrunner", "Run")
    RunEvent = apps.get_model("taskrunner", "RunEvent")
    task = Task.objects.create(name="old-crawl", argv=["true"], params=[])
    total = LINES + 2
    run = Run.objects.create(task=task, status="succeeded", exit_code=0, last_seq=total)
    t0 = datetime(2026, 11, 1, 8, 0, 0, 123456, tzinfo=UTC)
    expected = [{"seq": 1, "event": "status", "data": {"id": run.pk, "status": "queued"}}]
    rows = [RunEvent(run=run, seq=1, kind="status", data=expected[0]["data"], ts=t0)]
    for i in range(LINES):
        seq = i + 2
        ts = t0 + timedelta(microseconds=1700 * i)  # lines a few ms apart, some sharing one
        stream = "stderr" if i % 5 == 0 else "stdout"
        text = f'line {i} é \u2603 \\ " <b>' if i % 3 else ""
        continued = i % 11 == 0
        rows.append(
            RunEvent(
                run=run,
                seq=seq,
                kind="log",
                stream=stream,
                text=text,
                data={"continued": True} if continued else None,
                ts=ts,
            )
        )
        payload = {"seq": seq, "stream": stream, "line": text, "ts": _iso(ts)}
        if continued:
            payload["continued"] = True
        expected.append({"seq": seq, "event": "log", "data": payload})
    final = {"id": run.pk, "status": "succeeded", "exit_code": 0}
    rows.append(RunEvent(run=run, seq=total, kind="status", data=final, ts=t0))
    expected.append({"seq": total, "event": "status", "data": final})
    RunEvent.objects.bulk_create(rows, batch_size=2000)
    for item in (expected[0], expected[-1]):
        item["data"] = {**item["data"], "seq": item["seq"], "ts": _iso(t0)}
    return run.pk, expected


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _read_stream(url: str, token: str, headers: dict | None = None) -> list[dict]:
    events, current = [], {}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "GET", url, headers={"Authorization": f"Bearer {token}", **(headers or {})}
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("id: "):
                current["seq"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and current:
                if current.get("event") == "end":
                    return events
                events.append(current)
                current = {}
    raise AssertionError("the stream ended without its end event")


def test_old_rows_survive_migrate_and_stream_in_order(transactional_db, start_server, personas):
    executor = _migrate([BEFORE])
    old_apps = executor.loader.project_state([BEFORE]).apps
    run_id, expected = _fill_old_style(old_apps)

    executor = MigrationExecutor(connection)
    _migrate(executor.loader.graph.leaf_nodes())

    from taskrunner.models import ApiToken, EventChunk

    # Packed: a few rows hold the thousands of lines.
    assert 0 < EventChunk.objects.filter(run_id=run_id).count() < 10
    token = ApiToken.create_for(personas["bob"])[1]
    server = start_server()
    url = f"{server.url}/api/runs/{run_id}/events/"
    got = _read_stream(url, token)
    assert [e["seq"] for e in got] == list(range(1, LINES + 3))
    assert got == expected

    # Resuming in the middle of a chunk: exactly the events after it.
    for after in (1, 2, 2345, 4097, LINES + 1):
        resumed = _read_stream(url, token, {"Last-Event-ID": str(after)})
        assert resumed == expected[after:], after
    resumed = _read_stream(f"{url}?after=3000", token)
    assert resumed == expected[3000:]
