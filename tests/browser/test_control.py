"""Start the crawler from the dashboard, watch it, pause, resume and abort it."""

import re

import psutil
import pytest
from playwright.sync_api import expect

from tests.browser.pages import define_crawler, login, run_processes
from tests.conftest import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

NEW_LINE_JS = """([seq]) => {
    const v = document.getElementById('run-page').logViewer;
    return v.lines.some((l) => l.kind === 'log' && l.seq > seq);
}"""
HIGHEST_LOG_JS = """() => {
    const lines = document.getElementById('run-page').logViewer.lines;
    for (let i = lines.length - 1; i >= 0; i--) if (lines[i].kind === 'log') return lines[i].seq;
    return 0;
}"""


def _status(page):
    return page.locator(".tr-run-state [data-field=status]")


def test_start_watch_pause_resume_abort(live, page):
    from taskrunner.models import Run

    task = define_crawler()
    login(page, live.url, "bob")

    # Start it from the dashboard (through its parameter form if it has one).
    row = page.locator(f'tr.tr-task[data-task="{task.name}"]')
    expect(row).to_be_visible()
    if task.params:
        row.locator("summary").click()
        if row.locator("input[name=rate]").count():
            row.locator("input[name=rate]").fill("20")
    row.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    run_id = int(re.search(r"/runs/(\d+)/$", page.url).group(1))
    assert Run.objects.get(pk=run_id).requested_by.username == "bob"

    # Its lines appear, then keep coming within a second of being stored.
    expect(page.locator(".tr-line--stdout").first).to_be_visible(timeout=15_000)
    expect(_status(page)).to_have_text("running")
    expect(page.locator("[data-connection]").first).to_have_text("live")
    seq = page.evaluate(HIGHEST_LOG_JS)
    page.wait_for_function(NEW_LINE_JS, arg=[seq])
    # How fast is the benchmark's business (bench: log latency); here only that it is measured.
    lag = page.evaluate("() => document.getElementById('run-page').logViewer.lastLag")
    print(f"stored-to-shown lag of the newest line: {lag} ms")
    assert lag is not None

    # Pause: the status changes, every process of the run stops, lines stop.
    page.get_by_role("button", name="Pause").click()
    expect(_status(page)).to_have_text("paused", timeout=10_000)
    wait_for(
        lambda: (
            (procs := run_processes(run_id))
            and all(p.status() == psutil.STATUS_STOPPED for p in procs)
        ),
        timeout=3,
    )
    family = run_processes(run_id)
    assert len(family) >= 2, "the crawler and its helper process"
    # Every process of the run (found by its key) is stopped: nothing new can
    # be printed. (No observation window: the process state is the proof.)
    expect(page.locator(".tr-line--meta").filter(has_text="paused")).not_to_have_count(0)
    paused_at = page.evaluate(HIGHEST_LOG_JS)
    assert all(p.status() == psutil.STATUS_STOPPED for p in family)

    # Resume: running again, lines continue.
    page.get_by_role("button", name="Resume").click()
    try:
        expect(_status(page)).to_have_text("running", timeout=10_000)
    except AssertionError as error:
        run = Run.objects.get(pk=run_id)
        actions = list(run.actions.values_list("action", "applied_at", "outcome"))
        messages = page.locator("ul.messagelist").all_text_contents()
        raise AssertionError(
            f"db status {run.status}; actions {actions}; messages {messages}"
        ) from error
    page.wait_for_function(NEW_LINE_JS, arg=[paused_at], timeout=5000)
    assert all(p.status() != psutil.STATUS_STOPPED for p in run_processes(run_id))

    # Input reaches the child's stdin (the crawler answers `status`).
    if task.name == "crawler" and "crawler.py" in " ".join(task.argv):
        page.fill("[data-input]", "status")
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".tr-line").filter(has_text="status:").first).to_be_attached(
            timeout=5000
        )

    # Abort asks first; dismissing keeps the run going.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Abort").click()
    expect(_status(page)).to_have_text("running")
    dialogs = []

    def accept(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Abort").click()
    expect(_status(page)).to_have_text("aborted", timeout=10_000)
    assert dialogs and "Abort" in dialogs[0]
    expect(page.locator("[data-connection]").first).to_have_text("finished")
    wait_for(lambda: not run_processes(run_id), timeout=10)
    run = Run.objects.get(pk=run_id)
    assert run.status == "aborted"
    actions = [(a.action, a.by, a.via) for a in run.actions.order_by("id")]
    for action in ("start", "pause", "resume", "abort"):
        assert (action, "bob", "page") in actions, actions
    # The whole log downloads as text.
    download = page.locator("[data-download]")
    assert download.get_attribute("href") == f"/api/runs/{run_id}/log/?download=1"
    response = page.request.get(live.url + download.get_attribute("href"))
    assert response.ok
    assert "attachment" in response.headers.get("content-disposition", "")
    assert len(response.text().splitlines()) >= 10
    # Controls are gone once the run is final.
    expect(page.get_by_role("button", name="Pause")).to_be_hidden()
    expect(page.get_by_role("button", name="Abort")).to_be_hidden()
