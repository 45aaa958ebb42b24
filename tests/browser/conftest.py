"""Fixtures of the browser tests: Debian's Chromium driven by Playwright (sync API)
against a real uvicorn server and a real worker on the test database.

Playwright's sync API runs an event loop in this thread, and Django refuses
ORM calls while a loop is running unless DJANGO_ALLOW_ASYNC_UNSAFE is set.
The tests' own ORM calls are safe (no loop is really in the way), so it is set
for the modules of this directory only (the browser lives as long as its
module, so the loop is gone before other tests run), and never passed on to
the server and worker processes, whose async safety must stay checked.
"""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, needs

UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module", autouse=True)
def _orm_beside_playwright():
    """Allow this process's ORM calls while Playwright's loop runs (see above)."""
    before = os.environ.get(UNSAFE)
    os.environ[UNSAFE] = "true"
    yield
    if before is None:
        os.environ.pop(UNSAFE, None)
    else:
        os.environ[UNSAFE] = before


@contextmanager
def _child_env_without_unsafe():
    value = os.environ.pop(UNSAFE, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[UNSAFE] = value


@pytest.fixture
def start_server(start_server):
    def start(*args, **kwargs):
        with _child_env_without_unsafe():
            return start_server(*args, **kwargs)

    return start


@pytest.fixture
def start_worker(start_worker):
    def start(*args, **kwargs):
        with _child_env_without_unsafe():
            return start_worker(*args, **kwargs)

    return start


@pytest.fixture(scope="module")
def browser(_orm_beside_playwright):
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    needs(f"Chromium at {CHROMIUM}", Path(CHROMIUM).exists())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


NETWORK_ERRORS = ("net::ERR_", "Failed to load resource")


class PageProblems:
    """Console errors, CSP violations and uncaught exceptions seen by a page.

    Chromium reports any 404 or 500 (and a cut connection) as a console error
    "Failed to load resource" or `net::ERR_...`: those fail the test too, unless
    the test is marked `allow_network_errors(reason)` because it cuts the
    connection on purpose (a server restart). Then they are listed apart.
    """

    def __init__(self, allow_network_errors: bool = False):
        self.allow_network_errors = allow_network_errors
        self.errors: list[str] = []
        self.network_errors: list[str] = []
        # Which URLs failed: Chromium's console message does not say.
        self.failed_urls: list[str] = []

    def attach(self, page):
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "response",
            lambda r: r.status >= 400 and self.failed_urls.append(f"{r.status} {r.url}"),
        )
        page.on("requestfailed", lambda r: self.failed_urls.append(f"{r.failure} {r.url}"))

    def _console(self, message):
        if message.type == "error":
            text = message.text
            if self.allow_network_errors and any(marker in text for marker in NETWORK_ERRORS):
                self.network_errors.append(text)
                return
            where = (message.location or {}).get("url", "")
            self.errors.append(f"console: {text} ({where})" if where else f"console: {text}")


@pytest.fixture
def new_page(browser, request):
    """Make pages in fresh contexts; each must end with no console error or CSP violation."""
    made = []
    marker = request.node.get_closest_marker("allow_network_errors")
    if marker is not None:
        assert marker.args or marker.kwargs.get("reason"), "say why network errors are expected"

    def make(*, color_scheme="light", viewport=None):
        context = browser.new_context(
            color_scheme=color_scheme,
            viewport=viewport or {"width": 1360, "height": 900},
            device_scale_factor=1,
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        problems = PageProblems(allow_network_errors=marker is not None)
        problems.attach(page)
        made.append((context, problems))
        return page

    yield make
    errors = [e for _, problems in made for e in problems.errors]
    expected = [e for _, problems in made for e in problems.network_errors]
    if expected:
        print(f"network errors allowed by the test's marker: {expected}")
    failed_urls = [u for _, problems in made for u in problems.failed_urls]
    for context, _ in made:
        context.close()
    assert not errors, (errors, f"failed requests: {failed_urls}")


@pytest.fixture
def page(new_page):
    return new_page()


@pytest.fixture
def personas(transactional_db):
    """The personas of tests/conftest.py, with cheap password hashes.

    The default PBKDF2 costs over a second per user here; a hash of the same
    algorithm with few iterations is still accepted by the server's login
    (which upgrades it on first use).
    """
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.contrib.auth.models import Permission, User

    hashed = PBKDF2PasswordHasher().encode(PASSWORD, "browsertests", iterations=1000)
    alice = User.objects.create(
        username="alice",
        email="alice@example.com",
        password=hashed,
        is_staff=True,
        is_superuser=True,
    )
    bob = User.objects.create(username="bob", password=hashed, is_staff=True)
    bob.user_permissions.add(*Permission.objects.filter(codename__in=["start_run", "control_run"]))
    carol = User.objects.create(username="carol", password=hashed, is_staff=True)
    dave = User.objects.create(username="dave", password=hashed)
    return {"alice": alice, "bob": bob, "carol": carol, "dave": dave}


@pytest.fixture
def live(personas, start_server, worker):
    """A real server and worker on the test database, with the personas."""
    server = start_server()
    server.worker = worker
    return server
