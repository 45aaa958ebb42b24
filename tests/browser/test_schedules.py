"""Adding a schedule on the task page; its run appears live on the dashboard."""

import pytest
from playwright.sync_api import expect

from tests.browser.pages import define_numbered, login

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_add_a_schedule_and_see_its_run_live(live, page):
    from taskrunner.models import Run, Schedule

    define_numbered("scheduled", rate=20)
    login(page, live.url, "alice", "/tasks/scheduled/")
    page.locator("summary", has_text="Add a schedule").click()
    form = page.locator("form.tr-schedule-form")
    form.locator("input[name=cron]").fill("61 * * * *")
    form.locator("button[type=submit]").click()
    expect(page.locator(".tr-schedule-form .errorlist")).to_contain_text("Bad minute")
    assert not Schedule.objects.exists()

    form = page.locator("form.tr-schedule-form")
    form.locator("input[name=kind][value=every]").check()
    form.locator("input[name=every]").fill("2")
    form.locator("button[type=submit]").click()
    row = page.locator("table.tr-schedules tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("every 2 s")
    expect(row.locator("[data-field=next-run] time")).to_be_visible()

    page.goto(f"{live.url}/")
    expect(page.locator("[data-connection]")).to_have_text("live")
    schedule = Schedule.objects.get()
    running = page.locator("tr.tr-run [data-field=task]", has_text="Scheduled")
    expect(running).to_be_visible(timeout=20_000)
    run = Run.objects.get(schedule=schedule)
    assert run.actions.get().via == "schedule"
    expect(page.locator(f'tr.tr-run[data-run-id="{run.pk}"] [data-field=status]')).to_have_text(
        "running"
    )
    Schedule.objects.filter(pk=schedule.pk).update(enabled=False)
    run.request("abort")
