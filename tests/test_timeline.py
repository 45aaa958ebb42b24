"""The timeline's window ahead: schedules' coming due times and runs queued for later.

`taskrunner.coming.coming(now, end)` takes its clock as an argument, so the
times are checked exactly with a fixed `now`; the page and its JSON are
checked against times set relative to the real clock, far enough ahead that
no test waits for or races it.
"""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from taskrunner import coming as coming_mod
from taskrunner.coming import coming
from taskrunner.models import Schedule, Task
from taskrunner.serializers import iso

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 3, 2, 10, 0, 7, tzinfo=UTC)
HOUR = timedelta(hours=1)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def task():
    return Task.objects.create(name="export", title="Export <b>all</b>", argv=["true"])


def schedule(task, at: datetime, **fields) -> Schedule:
    """A schedule whose stored next time is `at` (as the worker would have left it)."""
    return Schedule.objects.create(task=task, next_run_at=at, **fields)


def seen(found) -> list[tuple[str, int, datetime, bool]]:
    return [
        ("run" if m.run else "schedule", (m.run or m.schedule).pk, m.at, m.overdue)
        for m in found.marks
    ]


def test_the_window_ahead_holds_each_schedules_times_and_runs_queued_for_later(task):
    every = schedule(task, NOW + timedelta(minutes=5), every=600)
    cron = schedule(task, utc(2026, 3, 2, 10, 15), cron="*/15 * * * *", timezone="Europe/Paris")
    later = task.start({}, run_after=NOW + timedelta(minutes=20))
    # None of these is coming: disabled, beyond the window, already due, another task disabled.
    schedule(task, None, every=60, enabled=False)
    schedule(task, NOW + 2 * HOUR, every=60)
    task.start({}, run_after=NOW + 2 * HOUR)
    task.start({}, run_after=NOW - HOUR)
    off = Task.objects.create(name="off", argv=["true"])
    schedule(off, NOW + timedelta(minutes=1), every=60)
    off.start({}, run_after=NOW + timedelta(minutes=1))
    Task.objects.filter(pk=off.pk).update(enabled=False)

    found = coming(NOW, NOW + HOUR)

    def s(pk, *hms):
        return ("schedule", pk, utc(2026, 3, 2, *hms), False)

    assert seen(found) == [
        s(every.pk, 10, 5, 7),
        s(cron.pk, 10, 15),
        s(every.pk, 10, 15, 7),
        ("run", later.pk, utc(2026, 3, 2, 10, 20, 7), False),
        s(every.pk, 10, 25, 7),
        s(cron.pk, 10, 30),
        s(every.pk, 10, 35, 7),
        s(cron.pk, 10, 45),
        s(every.pk, 10, 45, 7),
        s(every.pk, 10, 55, 7),
        s(cron.pk, 11, 0),
    ]
    assert not found.capped


def test_an_overdue_schedule_comes_first_then_the_times_the_worker_will_keep(task, settings):
    settings.TIME_ZONE = "UTC"
    # No worker fired these: the interval keeps its grid, cron goes on from now.
    every = schedule(task, NOW - timedelta(minutes=25), every=600)
    cron = schedule(task, NOW - timedelta(days=3), cron="0 * * * *")
    found = coming(NOW, NOW + HOUR)
    assert seen(found) == [
        ("schedule", cron.pk, NOW - timedelta(days=3), True),
        ("schedule", every.pk, NOW - timedelta(minutes=25), True),
        ("schedule", every.pk, utc(2026, 3, 2, 10, 5, 7), False),
        ("schedule", every.pk, utc(2026, 3, 2, 10, 15, 7), False),
        ("schedule", every.pk, utc(2026, 3, 2, 10, 25, 7), False),
        ("schedule", every.pk, utc(2026, 3, 2, 10, 35, 7), False),
        ("schedule", every.pk, utc(2026, 3, 2, 10, 45, 7), False),
        ("schedule", every.pk, utc(2026, 3, 2, 10, 55, 7), False),
        ("schedule", cron.pk, utc(2026, 3, 2, 11, 0), False),
    ]
    assert "due since 2026-02-27 10:00:07 UTC, not fired yet" in coming_mod.title(found.marks[0])


def test_a_thousand_schedules_give_at_most_the_caps(task):
    fast = schedule(task, NOW + timedelta(seconds=1), every=1)
    found = coming(NOW, NOW + HOUR)
    assert len(found.marks) == coming_mod.PER_SCHEDULE
    assert found.marks[-1].at == NOW + timedelta(seconds=coming_mod.PER_SCHEDULE)
    assert (found.capped_schedules, found.capped_total) == (1, False)

    fast.delete()
    Schedule.objects.bulk_create(
        Schedule(task=task, every=60, next_run_at=NOW + timedelta(seconds=1 + i % 60))
        for i in range(1000)
    )
    found = coming(NOW, NOW + HOUR)
    assert len(found.marks) == coming_mod.TOTAL
    assert found.capped_total and not found.capped_schedules
    # The soonest: 1,000 first times spread over a minute, the first 500 of them.
    assert max(m.at for m in found.marks) <= NOW + timedelta(seconds=31)
    assert all(not m.overdue for m in found.marks)


def staff_client(personas) -> Client:
    client = Client()
    client.force_login(personas["carol"])
    return client


def test_the_page_draws_the_coming_runs_as_escaped_marks(personas, task):
    soon = timezone.now() + timedelta(minutes=30)
    every = schedule(task, soon, every=900)
    later = task.start({}, run_after=soon + timedelta(seconds=5))
    client = staff_client(personas)

    html = client.get("/timeline/?window=1h").content.decode()
    assert f'data-kind="schedule" data-id="{every.pk}" data-at="{iso(soon)}"' in html
    assert f'data-at="{iso(soon + timedelta(seconds=900))}"' in html
    assert f'data-kind="run" data-id="{later.pk}" data-at="{iso(later.run_after)}"' in html
    assert "<b>all</b>" not in html
    assert f"Export &lt;b&gt;all&lt;/b&gt; · schedule {every.pk}, every 900 s · due " in html
    assert "Some coming runs are not drawn" in html and "data-coming-note hidden" in html
    assert 'data-coming-url="/timeline/coming/?window=1h"' in html

    # The 15-minute window ahead holds none of them.
    narrow = client.get("/timeline/?window=15m").content.decode()
    assert 'class="tr-coming' not in narrow

    body = client.get("/timeline/coming/?window=1h", headers={"Accept": "application/json"})
    marks = body.json()["marks"]
    assert [(m["kind"], m["id"], m["at"]) for m in marks[:3]] == [
        ("schedule", every.pk, iso(soon)),
        ("run", later.pk, iso(later.run_after)),
        ("schedule", every.pk, iso(soon + timedelta(seconds=900))),
    ]
    assert marks[0]["task"] == "export" and marks[0]["url"] == "/tasks/export/#schedules"
    assert marks[1]["url"] == f"/runs/{later.pk}/"
    assert body.json()["capped"] is False
    assert client.get("/timeline/coming/?window=15m").json()["marks"] == []


def test_a_thousand_schedules_keep_the_page_small(personas, task):
    soon = timezone.now() + timedelta(minutes=10)
    Schedule.objects.bulk_create(
        Schedule(task=task, every=1, next_run_at=soon) for _ in range(1000)
    )
    client = staff_client(personas)
    html = client.get("/timeline/?window=7d").content.decode()
    assert html.count('class="tr-coming ') == coming_mod.TOTAL
    assert "data-coming-note>" in html  # shown, not hidden
    assert len(client.get("/timeline/coming/?window=7d").json()["marks"]) == coming_mod.TOTAL


def test_the_coming_runs_are_for_staff_only(personas):
    for user in (None, personas["dave"]):
        client = Client()
        if user is not None:
            client.force_login(user)
        response = client.get("/timeline/coming/")
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
