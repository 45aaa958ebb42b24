"""The dashboard: one event stream for the whole page, live rows, permissions."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.pages import define_numbered, login
from tests.conftest import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_one_event_stream_whatever_the_number_of_tasks(live, page):
    from taskrunner.models import Run

    tasks = [define_numbered(f"task-{i:02d}", rate=20) for i in range(15)]
    tasks[3].params = [{"name": "region", "type": "str", "default": "eu", "choices": ["eu", "us"]}]
    tasks[3].save()
    already = tasks[0].start({}, via="cli")
    streams = []
    page.on(
        "response",
        lambda r: (
            streams.append(r.url)
            if "text/event-stream" in (r.headers.get("content-type") or "")
            else None
        ),
    )
    login(page, live.url, "bob")
    expect(page.locator("[data-connection]")).to_have_text("live")
    expect(page.locator("tr.tr-task")).to_have_count(15)

    # A run started elsewhere appears live, with its progress and state.
    running = page.locator(f'tr.tr-run[data-run-id="{already.pk}"]')
    expect(running.locator("[data-field=status]")).to_have_text("running", timeout=15_000)
    other = tasks[7].start({}, via="api")
    row = page.locator(f'tr.tr-run[data-run-id="{other.pk}"]')
    expect(row).to_be_visible()
    expect(row.locator("[data-field=task]")).to_have_text(tasks[7].display_title)
    expect(row.locator("[data-field=status]")).to_have_text("running", timeout=15_000)
    expect(page.locator('tr.tr-task[data-task="task-07"] [data-field=state]')).to_contain_text(
        "running"
    )
    expect(page.locator("[data-running-count]")).to_have_text("2")
    # Elapsed time ticks.
    first = row.locator("[data-field=elapsed]").text_content()
    expect(row.locator("[data-field=elapsed]")).not_to_have_text(first, timeout=3000)

    # Pause and resume from the dashboard, without leaving it.
    row.get_by_role("button", name="Pause").click()
    expect(row.locator("[data-field=status]")).to_have_text("paused")
    row.get_by_role("button", name="Resume").click()
    expect(row.locator("[data-field=status]")).to_have_text("running")
    # Abort asks, then the run leaves "running now" and becomes the task's last run.
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Abort").click()
    expect(row).to_have_count(0, timeout=10_000)
    task_row = page.locator('tr.tr-task[data-task="task-07"]')
    expect(task_row.locator("[data-field=last] [data-field=status]")).to_have_text("aborted")
    expect(task_row.locator("[data-field=state]")).to_contain_text("idle")
    wait_for(lambda: Run.objects.get(pk=other.pk).status == "aborted", timeout=5)

    # Whatever happened, the page opened exactly one stream.
    assert streams == [f"{live.url}/api/events/"], streams

    # A task with parameters: the form sends them.
    params_row = page.locator('tr.tr-task[data-task="task-03"]')
    params_row.locator("summary").click()
    params_row.locator("select[name=region]").select_option("us")
    params_row.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_url(f"{live.url}/runs/*/")
    started = Run.objects.filter(task=tasks[3]).get()
    assert started.params == {"region": "us"}
    assert started.actions.get().via == "page"
    page.go_back()
    expect(page.locator("[data-connection]")).to_have_text("live")

    # One more for the run page, and one for the dashboard when back on it.
    assert len([url for url in streams if url.endswith("/api/events/")]) == 2, streams
    for run in Run.objects.filter(status__in=["queued", "running", "paused"]):
        run.request("abort")


@pytest.mark.allow_network_errors("the server is stopped and restarted under the page")
def test_staff_without_permission_sees_no_buttons_and_the_feed_reconnects(
    personas, start_server, worker, page
):
    server = start_server()
    task = define_numbered("quiet", rate=5)
    login(page, server.url, "carol")
    expect(page.locator("tr.tr-task")).to_have_count(1)
    expect(page.get_by_role("button", name="Start")).to_have_count(0)
    expect(page.locator("[data-connection]")).to_have_text("live")

    # The server goes away: the page says so; a run starts meanwhile; when the
    # server is back the feed reconnects by itself and shows the run.
    server.stop()
    expect(page.locator("[data-connection]")).to_have_text(
        re.compile("disconnected|reconnecting"), timeout=10_000
    )
    run = task.start({})
    start_server(port=server.port)
    expect(page.locator("[data-connection]")).to_have_text("live", timeout=40_000)
    row = page.locator(f'tr.tr-run[data-run-id="{run.pk}"]')
    expect(row.locator("[data-field=status]")).to_have_text("running", timeout=15_000)
    expect(row.get_by_role("button", name="Pause")).to_have_count(0)
    # The run page too: the log, and neither controls nor the input box.
    row.locator("[data-field=link]").click()
    expect(page.locator(".tr-line--stdout").first).to_be_visible()
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    expect(page.locator("[data-input-form]")).to_have_count(0)
    run.request("abort")
    expect(page.locator(".tr-run-state [data-field=status]")).to_have_text("aborted")


def test_anonymous_and_non_staff_go_to_the_login(personas, server, page):
    page.goto(f"{server.url}/timeline/")
    assert "/admin/login/?next=/timeline/" in page.url
    page.fill("#id_username", "dave")
    page.fill("#id_password", "correct-horse-battery-staple")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_be_visible()


def test_timeline_shows_runs_live(live, page):
    task = define_numbered("gantt", rate=5, title="Gantt test")
    done = define_numbered("done", rate=5, total=1, title="Done")
    finished = done.start({})
    wait_for(lambda: (finished.refresh_from_db(), finished.status)[1] == "succeeded", timeout=15)
    login(page, live.url, "carol", "/timeline/")
    expect(page.locator("[data-connection]")).to_have_text("live")
    expect(page.locator(f'.tr-gantt-bar[data-run-id="{finished.pk}"] rect')).to_have_class(
        "tr-fill--succeeded"
    )
    run = task.start({})
    bar = page.locator(f'.tr-gantt-bar[data-run-id="{run.pk}"]')
    expect(bar).to_have_attribute("data-status", "running", timeout=15_000)
    width = float(bar.locator("rect").get_attribute("width"))
    page.goto(f"{live.url}/timeline/?window=15m")
    bar = page.locator(f'.tr-gantt-bar[data-run-id="{run.pk}"]')
    expect(page.locator('.tr-filter a[aria-current="true"]')).to_have_text("15 minutes")
    # A running bar grows with the clock (the window is 4x narrower: wider at once).
    page.wait_for_function(
        f"""() => Number(document.querySelector('.tr-gantt-bar[data-run-id="{run.pk}"] rect')
            .getAttribute('width')) > {width}"""
    )
    run.request("abort")
    expect(bar).to_have_attribute("data-status", "aborted", timeout=15_000)
