"""Screenshots of every page, light and dark, for reviewers (test-artifacts/ and docs/)."""

import random
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.pages import define_crawler, define_numbered, login, save_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def _history(tasks, user):
    """Finished runs of the last hour, as a worker would have left them."""
    from django.utils import timezone

    from taskrunner.models import Run, RunAction

    rng = random.Random(7)
    now = timezone.now()
    outcomes = ["succeeded"] * 7 + ["failed", "aborted", "timed_out"]
    for task, count, typical in tasks:
        moment = now - timedelta(minutes=58)
        for _ in range(count):
            seconds = max(2.0, rng.gauss(typical, typical * 0.25))
            status = rng.choice(outcomes)
            started = moment + timedelta(seconds=rng.uniform(20, 90))
            finished = started + timedelta(seconds=seconds)
            if finished > now - timedelta(minutes=2):
                break
            run = Run.objects.create(
                task=task,
                status=status,
                created_at=started - timedelta(seconds=1),
                started_at=started,
                finished_at=finished,
                exit_code={"succeeded": 0, "failed": 1}.get(status, -15),
                error={"failed": "exit code 1", "timed_out": "ran longer than 300 s"}.get(
                    status, ""
                ),
                requested_by=user,
                result={"rows": rng.randint(1000, 90000)} if status == "succeeded" else None,
            )
            RunAction.objects.create(
                run=run, action="start", by=user.username, via="page", at=run.created_at
            )
            moment = finished


def test_screenshots_light_and_dark(live, personas, new_page):
    from taskrunner.models import Task

    crawler = define_crawler()
    report = define_numbered(
        "nightly-report",
        rate=40,
        total=100_000,
        title="Nightly sales report",
        description="Aggregates yesterday's orders per region and mails the PDF.",
        params=[
            {"name": "region", "type": "str", "default": "eu", "choices": ["eu", "us", "asia"]},
            {"name": "dry_run", "type": "bool", "default": False},
        ],
    )
    export = define_numbered(
        "xml-export",
        rate=50,
        total=2000,
        title="XML catalogue export",
        description="Writes the product catalogue as one XML file for the marketplaces.",
    )
    define_numbered("smoke-tests", rate=50, total=300, title="Smoke tests of the site")
    if "crawler.py" in " ".join(crawler.argv):
        crawler.params = [
            {**spec, "default": 8.0} if spec["name"] == "rate" else spec for spec in crawler.params
        ]
        crawler.save()
    _history(
        [
            (export, 14, 150),
            (Task.objects.get(name="smoke-tests"), 20, 60),
            (report, 6, 300),
        ],
        personas["alice"],
    )
    crawl = crawler.start({}, user=personas["bob"], via="page")
    nightly = report.start({"region": "us"}, user=personas["alice"], via="page")

    for scheme in ("light", "dark"):
        page = new_page(color_scheme=scheme, viewport={"width": 1360, "height": 860})
        page.goto(f"{live.url}/")
        expect(page.locator("#id_username")).to_be_visible()
        save_screenshot(page, f"login-{scheme}")
        login(page, live.url, "alice")
        expect(
            page.locator(f'tr.tr-run[data-run-id="{nightly.pk}"] [data-field=status]')
        ).to_have_text("running", timeout=15_000)
        expect(page.locator(f'tr.tr-run[data-run-id="{crawl.pk}"] progress[value]')).to_have_count(
            1, timeout=15_000
        )
        save_screenshot(page, f"dashboard-{scheme}")

        page.goto(f"{live.url}/runs/{crawl.pk}/")
        page.wait_for_function(
            "() => document.getElementById('run-page').logViewer.lines.length > 40"
        )
        expect(page.locator("[data-connection]").first).to_have_text("live")
        page.wait_for_function(
            "() => document.querySelector('[data-field=cpu]').textContent !== '–'"
        )
        save_screenshot(page, f"run-{scheme}")

        page.goto(f"{live.url}/tasks/{export.name}/")
        expect(page.locator(".tr-chart-svg rect")).not_to_have_count(0)
        save_screenshot(page, f"task-{scheme}")

        page.goto(f"{live.url}/timeline/")
        expect(page.locator("[data-connection]").first).to_have_text("live")
        expect(page.locator(".tr-gantt-bar")).not_to_have_count(0)
        save_screenshot(page, f"timeline-{scheme}")
    crawl.request("abort")
    nightly.request("abort")
