"""Smoke-test the site's core features against its real database.

    python backoffice/jobs/smoke_tests.py

Each check prints one line (`PASS name` or `FAIL name: why`); the result is
`{"passed": N, "failed": M, "failures": [...]}` and the exit code is 1 if any
check failed. Nothing is left behind: the checks that write do it in a
transaction that is rolled back, and hold it only for a moment (on SQLite a
write transaction blocks every other writer).
"""

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if not __package__:  # run as a file, not with -m: make the project importable
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.staticfiles import finders  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from taskrunner import child  # noqa: E402
from taskrunner.models import Run, Task, Via, Worker  # noqa: E402
from taskrunner.params import ParamError  # noqa: E402


class CheckFailed(Exception):
    pass


class Rollback(Exception):
    """Raised at the end of a writing check to undo everything it did."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def check_system_checks() -> None:
    # call_command raises SystemCheckError on any error-level message.
    call_command("check", stdout=open(os.devnull, "w"))  # noqa: SIM115


def check_database_reachable() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        expect(cursor.fetchone()[0] == 1, "SELECT 1 did not answer 1")


def check_migrations_applied() -> None:
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    expect(not plan, f"{len(plan)} migration(s) not applied; run manage.py migrate")


def check_models_round_trip() -> None:
    """A task, a run, its params, events and audit trail, then all undone."""
    try:
        with transaction.atomic():
            task = Task(
                name="smoke-test-probe",
                argv=["true"],
                params=[{"name": "n", "type": "int", "default": 2}],
            )
            task.full_clean()
            task.save()
            run = task.start({"n": "3"}, via=Via.CLI)
            fresh = Run.objects.get(pk=run.pk)
            expect(fresh.params == {"n": 3}, f"params came back as {fresh.params!r}")
            expect(fresh.status == "queued", f"a new run is {fresh.status}")
            expect(fresh.event_chunks.filter(kind="status").exists(), "no status event recorded")
            expect(fresh.actions.filter(action="start").exists(), "no start action recorded")
            try:
                task.start({"n": "many"})
            except ParamError as exc:
                expect("n" in exc.errors, f"the error does not name n: {exc.errors}")
            else:
                raise CheckFailed("a bad parameter was accepted")
            raise Rollback
    except Rollback:
        pass
    expect(not Task.objects.filter(name="smoke-test-probe").exists(), "the rollback left a row")


def site_host() -> str:
    """A host name the site accepts (the test client must send one)."""
    for host in settings.ALLOWED_HOSTS:
        if host and "*" not in host:
            return host.lstrip(".")
    return "localhost"


def client() -> Client:
    return Client(SERVER_NAME=site_host())


def get(path: str, **kwargs):
    # secure=True: with HTTPS on, a plain request would only get a redirect.
    return client().get(path, secure=True, **kwargs)


def check_login_page() -> None:
    response = get("/admin/login/")
    expect(response.status_code == 200, f"/admin/login/ answered {response.status_code}")
    expect(b"csrfmiddlewaretoken" in response.content, "the login form has no CSRF token")


def check_pages_need_login() -> None:
    for path in ("/", "/admin/"):
        response = get(path)
        expect(response.status_code == 302, f"{path} answered {response.status_code}, not 302")
        expect("login" in response["Location"], f"{path} redirects to {response['Location']}")


def check_api_needs_auth() -> None:
    response = get("/api/tasks/")
    expect(response.status_code == 401, f"/api/tasks/ answered {response.status_code}, not 401")
    expect(response.json().get("error", {}).get("code") == "unauthenticated", "no JSON error")


def check_staff_sees_pages() -> None:
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_superuser(
                "smoke-test-probe", "probe@example.com", None
            )
            browser = client()
            browser.force_login(user)
            for path in ("/", "/admin/", "/api/tasks/"):
                response = browser.get(path, secure=True)
                expect(response.status_code == 200, f"{path} answered {response.status_code}")
            raise Rollback
    except Rollback:
        pass


def check_static_files() -> None:
    expect(finders.find("admin/css/base.css"), "the admin's CSS cannot be found")


def check_worker_alive() -> None:
    recent = timezone.now() - timedelta(seconds=60)
    expect(
        Worker.objects.filter(stopped_at__isnull=True, heartbeat_at__gte=recent).exists(),
        "no worker has sent a heartbeat in the last minute",
    )


def check_exports_writable() -> None:
    directory = ROOT / "var" / "exports"
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".smoke-{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()


CHECKS: list[tuple[str, Callable[[], None]]] = [
    ("system checks (manage.py check)", check_system_checks),
    ("database reachable", check_database_reachable),
    ("migrations applied", check_migrations_applied),
    ("models round-trip (rolled back)", check_models_round_trip),
    ("login page answers", check_login_page),
    ("pages send anonymous users to the login", check_pages_need_login),
    ("API refuses anonymous requests", check_api_needs_auth),
    ("staff see the dashboard, admin and API", check_staff_sees_pages),
    ("static files found", check_static_files),
    ("a worker is alive", check_worker_alive),
    ("exports directory writable", check_exports_writable),
]


def run_check(name: str, check: Callable[[], None]) -> str | None:
    """Run one check and print its line; return why it failed, or None."""
    started = time.monotonic()
    try:
        check()
    except CheckFailed as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        traceback.print_exc(file=sys.stderr)
    else:
        print(f"PASS {name} ({(time.monotonic() - started) * 1000:.0f} ms)")
        return None
    print(f"FAIL {name}: {reason}")
    return reason


def main() -> int:
    # The checks provoke 302s and 401s on purpose: not worth a warning each.
    logging.getLogger("django.request").setLevel(logging.ERROR)
    failures = []
    for index, (name, check) in enumerate(CHECKS, start=1):
        reason = run_check(name, check)
        if reason is not None:
            failures.append({"check": name, "reason": reason})
        child.progress(index, len(CHECKS), name)
    passed = len(CHECKS) - len(failures)
    print(f"{passed} passed, {len(failures)} failed")
    child.result({"passed": passed, "failed": len(failures), "failures": failures})
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
