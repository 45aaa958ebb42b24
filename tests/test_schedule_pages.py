"""The pages of runs that start themselves: schedule forms, start later, run and dashboard facts."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from taskrunner.models import Run, Schedule, Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def task():
    return Task.objects.create(
        name="smoke", argv=["true"], retries=2, params=[{"name": "suite", "default": "core"}]
    )


def test_add_disable_enable_and_remove_a_schedule_on_the_task_page(personas, task):
    alice = logged_in(personas["alice"])
    page = alice.get("/tasks/smoke/")
    assert b"Add a schedule" in page.content
    bad = alice.post("/tasks/smoke/schedules/", {"kind": "cron", "cron": "61 * * * *"})
    assert bad.status_code == 200  # the page again, with the form's errors
    assert b"errorlist" in bad.content and b"Bad minute" in bad.content
    assert b'value="61 * * * *"' in bad.content  # the form keeps what was typed
    bad_zone = alice.post(
        "/tasks/smoke/schedules/", {"kind": "every", "every": "60", "timezone": "X"}
    )
    assert bad_zone.status_code == 200 and b"Unknown time zone" in bad_zone.content
    assert not Schedule.objects.exists()
    made = alice.post(
        "/tasks/smoke/schedules/",
        {"kind": "every", "every": "900", "overlap": "queue", "param-suite": "all"},
    )
    assert made.status_code == 302
    schedule = Schedule.objects.get()
    assert (schedule.every, schedule.overlap, schedule.params) == (900, "queue", {"suite": "all"})
    page = alice.get("/tasks/smoke/")
    assert b"every 900 s" in page.content and b"Disable" in page.content
    dashboard = alice.get("/")
    assert b"next run" in dashboard.content
    alice.post(f"/schedules/{schedule.pk}/disable/")
    assert Schedule.objects.get().next_run_at is None
    alice.post(f"/schedules/{schedule.pk}/enable/")
    assert Schedule.objects.get().next_run_at is not None
    alice.post(f"/schedules/{schedule.pk}/remove/")
    assert not Schedule.objects.exists()


def test_staff_without_schedule_permissions_see_but_cannot_change(personas, task):
    schedule = Schedule.objects.create(task=task, every=60)
    carol = logged_in(personas["carol"])
    page = carol.get("/tasks/smoke/")
    assert b"every 60 s" in page.content and b"Add a schedule" not in page.content
    assert carol.post("/tasks/smoke/schedules/", {"kind": "every", "every": "5"}).status_code == 403
    assert carol.post(f"/schedules/{schedule.pk}/remove/").status_code == 403
    assert carol.post(f"/schedules/{schedule.pk}/disable/").status_code == 403
    assert Schedule.objects.get().enabled


def test_start_later_and_the_run_page_facts(personas, task):
    bob = logged_in(personas["bob"])
    later = timezone.localtime() + timedelta(hours=2)
    answer = bob.post("/tasks/smoke/start/", {"run_after": later.strftime("%Y-%m-%dT%H:%M:%S")})
    assert answer.status_code == 302
    run = Run.objects.get()
    assert abs((run.run_after - later).total_seconds()) < 1
    page = bob.get(f"/runs/{run.pk}/")
    assert b"attempt 1 of 3" in page.content and b"not before" in page.content
    junk = bob.post("/tasks/smoke/start/", {"run_after": "soon"})
    assert junk.status_code == 302 and Run.objects.count() == 1
    retry = Run.objects.create(task=task, attempt=2, retry_of=run)
    Run.objects.filter(pk=run.pk).update(retried_by=retry, log_pruned_lines=1234)
    page = bob.get(f"/runs/{run.pk}/").content.decode()
    assert f'href="/runs/{retry.pk}/"' in page and "1234 earlier lines pruned" in page
    assert f'href="/runs/{run.pk}/"' in bob.get(f"/runs/{retry.pk}/").content.decode()
