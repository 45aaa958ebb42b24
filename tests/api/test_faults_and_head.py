"""What the API does when something breaks on the server, and HEAD on streams.

The faults are real: the test breaks the database under a real uvicorn server
(a column the code reads is renamed, as a half-applied migration would leave
it) and puts it back afterwards. Nothing is mocked.
"""

from contextlib import contextmanager

import httpx
import pytest
from api_helpers import Stream, bearer
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def renamed_column(model, field: str):
    """The column of `model.field` renamed for the duration: queries that read it fail."""
    table = connection.ops.quote_name(model._meta.db_table)
    column = model._meta.get_field(field).column
    old, new = connection.ops.quote_name(column), connection.ops.quote_name(f"{column}_gone")
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} RENAME COLUMN {new} TO {old}")


def test_an_unexpected_failure_is_a_json_500_internal(api, tokens, make_task):
    from taskrunner.models import Run

    make_task("demo").start({})
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        assert http.get("/api/runs/").status_code == 200
        with renamed_column(Run, "progress"):
            response = http.get("/api/runs/")
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "internal"
        assert "Traceback" not in response.text and "<html" not in response.text.lower()
        assert http.get("/api/runs/").status_code == 200  # and it recovers
    assert "API error" in api.log()  # logged with its traceback, for the operator


def test_a_stream_that_fails_after_its_200_sends_an_error_event(api, tokens, make_task):
    from taskrunner.models import Run

    make_task("demo").start({})  # an active run for the dashboard feed to read
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        with renamed_column(Run, "progress"), Stream(http, "/api/events/") as stream:
            assert stream.status_code == 200
            assert stream.response.headers["content-type"].startswith("text/event-stream")
            events = stream.rest()  # the stream ends after the error event
        assert [ev.event for ev in events] == ["error"], events
        assert "reconnect" in events[0].data["message"]
        with Stream(http, "/api/events/") as stream:  # and it recovers
            assert stream.next_event().event == "run"


@pytest.mark.parametrize("kind", ["run", "task", "dashboard"])
def test_head_on_every_stream_answers_with_the_streams_headers(api, tokens, make_task, kind):
    run = make_task("demo").start({})
    url, headers = {
        "run": (f"/api/runs/{run.pk}/events/", {}),
        "task": ("/api/tasks/demo/", {"Accept": "text/event-stream"}),
        "dashboard": ("/api/events/", {}),
    }[kind]
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        response = http.head(url, headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.content == b""
        with Stream(http, url, headers) as stream:  # GET agrees with HEAD
            assert stream.response.headers["content-type"] == response.headers["content-type"]


def test_head_on_a_missing_runs_stream_is_404(api, tokens, make_task):
    make_task("empty")
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        assert http.head("/api/runs/999999/events/").status_code == 404
        accept = {"Accept": "text/event-stream"}
        assert http.head("/api/tasks/empty/", headers=accept).status_code == 404
