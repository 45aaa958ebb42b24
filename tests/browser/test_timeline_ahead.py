"""The timeline's window ahead, in Chromium: coming runs drawn after the now line, kept fresh."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser.pages import define_numbered, login
from tests.conftest import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def coming_marks(page, kind: str, pk: int):
    return page.locator(f'.tr-coming[data-kind="{kind}"][data-id="{pk}"]')


def test_coming_runs_are_drawn_ahead_and_move_on_when_a_schedule_fires(live, page):
    from taskrunner.models import Run, Schedule

    reports = define_numbered("reports", rate=20, title="Reports")
    later = define_numbered("later", rate=20, title="Later")
    ticking = define_numbered("ticking", rate=20, total=1, title="Ticking")
    # At least one time of */20 falls in any hour ahead.
    cron = Schedule.objects.create(task=reports, cron="*/20 * * * *")
    deferred = later.start({}, run_after=timezone.now() + timedelta(minutes=20))

    login(page, live.url, "carol", "/timeline/")
    expect(page.locator("[data-connection]")).to_have_text("live")
    mark = coming_marks(page, "schedule", cron.pk).first
    expect(mark).to_be_attached()
    expect(mark.locator("title")).to_contain_text(
        f"Reports · schedule {cron.pk}, cron */20 * * * * · due "
    )
    now_x = float(page.locator("[data-now-line]").get_attribute("x1"))
    assert float(mark.locator("rect").get_attribute("x")) > now_x
    run_mark = coming_marks(page, "run", deferred.pk)
    expect(run_mark).to_have_attribute("href", f"/runs/{deferred.pk}/")
    expect(run_mark.locator("title")).to_contain_text(
        f"Later · run {deferred.pk} queued, not before "
    )

    # A schedule added now is drawn once it fires: its run appears on the feed,
    # and the page reloads the coming times, all after the time that fired.
    fast = Schedule.objects.create(task=ticking, every=2)
    fired = wait_for(lambda: Run.objects.filter(schedule=fast).order_by("id").first(), timeout=20)
    expect(page.locator(f'.tr-gantt-bar[data-run-id="{fired.pk}"]')).to_be_attached()
    expect(coming_marks(page, "schedule", fast.pk)).not_to_have_count(0)
    page.wait_for_function(
        """([pk, fired]) => {
            const marks = document.querySelectorAll(
                `.tr-coming[data-kind="schedule"][data-id="${pk}"]`);
            return marks.length > 0
                && [...marks].every((m) => Date.parse(m.dataset.at) > Date.parse(fired));
        }""",
        arg=[fast.pk, fired.scheduled_for.isoformat()],
    )
    Schedule.objects.filter(pk=fast.pk).update(enabled=False)

    # A run queued for later while the page is open gets its mark from the feed.
    another = later.start({}, run_after=timezone.now() + timedelta(minutes=40))
    expect(coming_marks(page, "run", another.pk)).to_be_attached()
