"""Schedule endpoints, `run_after` on starts and the keys the contract adds, over real HTTP."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

SCHEDULE_KEYS = {
    "id", "task", "cron", "every", "timezone", "params", "enabled", "overlap", "next_run_at",
    "last_run", "url",
}  # fmt: skip


@pytest.fixture
def scheduler(personas, as_user):
    """bob, allowed to add, change and delete schedules."""
    from django.contrib.auth.models import Permission

    codenames = ["add_schedule", "change_schedule", "delete_schedule"]
    personas["bob"].user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return as_user["bob"]


@pytest.fixture
def suite(make_task):
    return make_task(
        "smoke",
        params=[{"name": "suite", "type": "str", "default": "core", "choices": ["core", "all"]}],
    )


def test_add_list_change_and_remove_a_schedule(scheduler, suite, as_user):
    from taskrunner.models import Schedule

    made = scheduler.post(
        "/api/tasks/smoke/schedules/",
        json={"cron": "*/15 * * * *", "timezone": "Europe/Paris", "params": {"suite": "all"}},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) == SCHEDULE_KEYS
    assert made.headers["Location"] == body["url"] == f"/api/schedules/{body['id']}/"
    assert body["params"] == {"suite": "all"} and body["overlap"] == "skip" and body["enabled"]
    assert body["next_run_at"].endswith(":00.000Z")
    minute = int(body["next_run_at"][14:16])
    assert minute % 15 == 0

    carol = as_user["carol"]  # staff: may view, not change
    assert carol.get("/api/schedules/?task=smoke").json()["schedules"] == [body]
    assert carol.get(body["url"]).json() == body
    assert carol.patch(body["url"], json={"enabled": False}).status_code == 403
    assert carol.delete(body["url"]).status_code == 403
    assert carol.post("/api/tasks/smoke/schedules/", json={"every": 60}).status_code == 403

    off = scheduler.patch(body["url"], json={"enabled": False})
    assert off.status_code == 200 and off.json()["next_run_at"] is None
    on = scheduler.patch(body["url"], json={"enabled": True, "every": 30})
    assert on.status_code == 200
    assert (on.json()["every"], on.json()["cron"], on.json()["next_run_at"]) != (30, None, None)
    task = scheduler.get("/api/tasks/smoke/").json()
    assert [s["id"] for s in task["schedules"]] == [body["id"]]
    assert task["next_run_at"] == on.json()["next_run_at"]
    assert scheduler.delete(body["url"]).status_code == 204
    assert not Schedule.objects.exists()
    assert scheduler.get(body["url"]).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": 5}, "cron"),
        ({"every": 0.5}, "every"),
        ({"every": "often"}, "every"),
        ({}, "cron"),
        ({"cron": "@daily", "timezone": "Europe/Atlantis"}, "timezone"),
        ({"every": 60, "overlap": "sometimes"}, "overlap"),
        ({"every": 60, "params": {"suite": "none"}}, "params.suite"),
        ({"every": 60, "params": {"nope": 1}}, "params.nope"),
        ({"every": 60, "colour": "red"}, "colour"),
    ],
)
def test_bad_schedules_are_400_naming_the_field(scheduler, suite, body, field):
    from taskrunner.models import Schedule

    answer = scheduler.post("/api/tasks/smoke/schedules/", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert not Schedule.objects.exists()


def test_a_bad_change_leaves_the_schedule_as_it_was(scheduler, suite):
    made = scheduler.post("/api/tasks/smoke/schedules/", json={"every": 60}).json()
    bad = scheduler.patch(made["url"], json={"every": 120, "timezone": "Nowhere/Else"})
    assert bad.status_code == 400 and "timezone" in bad.json()["error"]["fields"]
    assert scheduler.get(made["url"]).json() == made


def test_run_after_on_a_start(as_user, suite):
    bob = as_user["bob"]
    later = bob.post("/api/tasks/smoke/runs/", json={"run_after": "2099-12-01T03:00:00+01:00"})
    assert later.status_code == 202, later.text
    run = later.json()
    assert run["run_after"] == "2099-12-01T02:00:00.000Z" and run["status"] == "queued"
    for key in ("retry_of", "retried_by", "schedule", "scheduled_for"):
        assert run[key] is None
    naive = bob.post("/api/tasks/smoke/runs/", json={"run_after": "2099-12-01T03:00:00"})
    assert naive.status_code == 400 and "run_after" in naive.json()["error"]["fields"]
    junk = bob.post("/api/tasks/smoke/runs/", json={"run_after": "tomorrow"})
    assert junk.status_code == 400 and "run_after" in junk.json()["error"]["fields"]
    short = bob.post("/api/tasks/smoke/", json={"action": "start", "run_after": "2099-01-01Z"})
    assert short.status_code == 400
    task = bob.get("/api/tasks/smoke/").json()
    for key in ("retries", "retry_delay", "schedules", "next_run_at", "keep_days", "keep_runs"):
        assert key in task
    assert (task["retries"], task["retry_delay"], task["schedules"]) == (0, 10.0, [])
