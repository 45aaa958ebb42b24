"""The demo export's feed on the run page and the dashboard, downloaded through the browser."""

import hashlib
import io
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from tests.browser.pages import login
from tests.conftest import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

FEED = "feeds/catalogue-eu.xml"


def test_the_run_page_lists_the_feed_and_its_link_downloads_it(live, page):
    from taskrunner.models import Artifact, Run, Task

    call_command("setup_demo", stdout=io.StringIO())
    login(page, live.url, "carol")  # staff without permissions may look and download
    run = Task.objects.get(name="xml-export").start({"rows": 2000})
    page.goto(f"{live.url}/runs/{run.pk}/")
    row = page.locator(f'[data-artifacts] tr[data-artifact="{FEED}"]')
    expect(row).to_be_visible(timeout=30_000)  # rendered, or added live when published
    artifact = wait_for(lambda: Artifact.objects.filter(run=run, name=FEED).first())
    expect(row.locator("code")).to_have_text(artifact.sha256)
    with page.expect_download() as info:
        row.get_by_role("link", name="Download").click()
    download = info.value
    assert download.suggested_filename == "catalogue-eu.xml"
    content = Path(download.path()).read_bytes()
    assert len(content) == artifact.size
    assert hashlib.sha256(content).hexdigest() == artifact.sha256

    wait_for(lambda: Run.objects.get(pk=run.pk).status == "succeeded", timeout=30)
    page.goto(f"{live.url}/")
    link = page.locator('tr.tr-task[data-task="xml-export"] [data-field="last-artifact"]')
    expect(link).to_have_text(FEED)
    expect(link).to_have_attribute("href", f"/api/runs/{run.pk}/artifacts/{FEED}")
