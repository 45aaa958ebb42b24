"""Helpers of the browser tests: logging in, test tasks, screenshots, processes."""

import os
import re
import shutil
from pathlib import Path

from tests.conftest import PASSWORD, ROOT, child_script, processes_with_key

ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"


def login(page, base_url: str, username: str, next_path: str = "/") -> None:
    """Log in through the admin's login form, as a person would."""
    page.goto(f"{base_url}{next_path}")
    assert "/admin/login/" in page.url, page.url
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(re.escape(base_url + next_path) + r"$"))


def define_numbered(name: str = "numbered", *, rate: float = 50, total: int = 0, **fields):
    """A crawler-like test task printing `line N` (tests/children/browser_numbered.py)."""
    from taskrunner.models import Task

    argv = [*child_script("browser_numbered"), "--rate", str(rate), "--total", str(total)]
    defaults = {"title": name.replace("-", " ").capitalize(), "argv": argv, "cwd": str(ROOT)}
    defaults.update(fields)
    task, _ = Task.objects.update_or_create(name=name, defaults=defaults)
    return task


def define_crawler():
    """The demo crawler of backoffice/jobs when it exists, else the test child."""
    from taskrunner.models import Task

    crawler = ROOT / "backoffice" / "jobs" / "crawler.py"
    if crawler.exists():
        try:
            from backoffice.management.commands.setup_demo import demo_tasks
        except ImportError:
            demo_tasks = None
        if demo_tasks is not None:
            spec = next(t for t in demo_tasks() if t["name"] == "crawler")
            task = Task(**spec)
            task.cwd = str(ROOT)
            task.full_clean()
            task.save()
            return task
    return define_numbered("crawler", rate=20, title="Crawler (test child)")


def save_screenshot(page, name: str) -> Path:
    """Save to test-artifacts/screenshots/ (and to docs/screenshots/ with UPDATE_SCREENSHOTS=1).

    The committed copies change only when asked, so a test run leaves the
    work tree clean.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


def run_processes(run_id: int):
    """The run's live processes, found as the worker finds them: by the run's key.

    Every process the run started carries TASKRUNNER_PROCESS_KEY in its
    environment, so a grandchild orphaned when its parent exits, or one that
    left the group with setsid(), is still found.
    """
    from taskrunner.models import Run

    return processes_with_key(Run.objects.get(pk=run_id).process_key)
