"""A run's priority in its JSON (and the schema's Run), and on its page when it is not 0."""

import jsonschema
import pytest
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)

TASK = "django-tests-djangotasks-marker"  # the task row `SupervisedBackend` makes for it


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def run_schema() -> dict:
    from taskrunner.api.schema import openapi_document

    document = openapi_document()
    return {**document["components"]["schemas"]["Run"], "components": document["components"]}


def test_the_run_json_carries_the_priority_a_django_task_gave_it(personas):
    from tests.djangotasks import marker

    urgent = int(marker.using(priority=50).enqueue("urgent").id)
    later = int(marker.using(priority=-100).enqueue("later").id)
    plain = int(marker.enqueue("plain").id)
    carol = logged_in(personas["carol"])  # staff with no permission: may read

    schema = run_schema()
    for run_id, priority in ((urgent, 50), (later, -100), (plain, 0)):
        run = carol.get(f"/api/runs/{run_id}/").json()
        assert run["priority"] == priority
        jsonschema.validate(run, schema, cls=jsonschema.Draft202012Validator)
    listed = carol.get(f"/api/runs/?task={TASK}").json()["runs"]
    assert {r["id"]: r["priority"] for r in listed} == {urgent: 50, later: -100, plain: 0}
    active = carol.get(f"/api/tasks/{TASK}/").json()["active_runs"]
    assert {r["id"]: r["priority"] for r in active} == {urgent: 50, later: -100, plain: 0}


def test_the_run_page_shows_the_priority_only_when_it_is_not_0(personas):
    from tests.djangotasks import marker

    urgent = marker.using(priority=50).enqueue("urgent").id
    later = marker.using(priority=-3).enqueue("later").id
    plain = marker.enqueue("plain").id
    carol = logged_in(personas["carol"])

    page = carol.get(f"/runs/{urgent}/").content.decode()
    assert '<dt>Priority</dt><dd class="tr-num" data-field="priority">50</dd>' in page
    page = carol.get(f"/runs/{later}/").content.decode()
    assert 'data-field="priority">-3</dd>' in page
    page = carol.get(f"/runs/{plain}/").content.decode()
    assert "<dt>Attempt</dt>" in page  # the facts are there, the default priority is not
    assert "Priority" not in page and 'data-field="priority"' not in page
