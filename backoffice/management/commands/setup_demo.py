"""`python manage.py setup_demo`: define the demo tasks and a first staff login.

Idempotent (`make run` calls it every time): the three demo tasks are created
or brought up to date, and a superuser is created only when there is no staff
user at all; its random password is printed this once.
"""

import secrets
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from taskrunner.models import Schedule, Task

JOBS = Path(settings.BASE_DIR) / "backoffice" / "jobs"


def demo_tasks() -> list[dict]:
    """The definitions; argv starts with this Python, so the venv is the one used."""
    python = sys.executable
    return [
        {
            "name": "xml-export",
            "pass_env": [],
            "title": "XML catalogue export",
            "description": (
                "Writes the product catalogue as one XML file, streaming (flat memory), "
                "and keeps it as the run's artifact feeds/catalogue-REGION.xml, "
                "downloadable from the run page. 100,000 rows make about 23 MB; "
                "2,000,000 rows about 450 MB. Its result names the artifact and its size."
            ),
            "argv": [
                python,
                str(JOBS / "xml_export.py"),
                "--rows",
                "{rows}",
                "--region",
                "{region}",
            ],
            "params": [
                {"name": "rows", "type": "int", "default": 100_000},
                {"name": "region", "type": "str", "default": "eu", "choices": ["eu", "us", "asia"]},
            ],
            "timeout": 1800.0,
            "grace": 5.0,
            "max_concurrent": 2,
        },
        {
            "name": "smoke-tests",
            "title": "Smoke tests of the site",
            "description": (
                "Checks the site's core features against the live database: system "
                "checks, migrations, a model round-trip rolled back, the login page, "
                "access rules of pages and API, static files, a live worker. "
                "One line per check; fails if any check fails."
            ),
            "argv": [python, str(JOBS / "smoke_tests.py")],
            # It checks this very site, so it needs the site's database and
            # key, which children otherwise never inherit.
            "pass_env": ["DATABASE_URL", "SECRET_KEY"],
            "params": [],
            "timeout": 300.0,
            "grace": 5.0,
            "max_concurrent": 1,
            # Regular runs a new user sees happen (a schedule, below), each retried
            # once a minute later if it fails.
            "retries": 1,
            "retry_delay": 60.0,
        },
        {
            "name": "crawler",
            "pass_env": [],
            "title": "Site crawler (runs until aborted)",
            "description": (
                "Crawls a generated site forever, one line per page, through a fetcher "
                "process of its own. Send it `slower`, `faster` or `status` as input."
            ),
            "argv": [python, str(JOBS / "crawler.py"), "--rate", "{rate}", "--depth", "{depth}"],
            "params": [
                {"name": "rate", "type": "float", "default": 5.0},
                {"name": "depth", "type": "int", "default": 5, "choices": [3, 4, 5, 6]},
            ],
            "timeout": None,
            "grace": 5.0,
            "max_concurrent": 3,
        },
    ]


class Command(BaseCommand):
    help = "Define the demo tasks and, if there is no staff user, a first superuser."

    def add_arguments(self, parser):
        parser.add_argument(
            "--username", default="admin", help="name of the first superuser (default: admin)"
        )

    def handle(self, *args, username, **options):
        with transaction.atomic():
            for definition in demo_tasks():
                created = self.define(definition)
                self.stdout.write(
                    f"{'Created' if created else 'Updated'} task {definition['name']}."
                )
            self.demo_schedules()
            self.first_superuser(username)

    def define(self, definition: dict) -> bool:
        task = Task.objects.filter(name=definition["name"]).first()
        created = task is None
        task = task or Task(name=definition["name"])
        for field, value in definition.items():
            setattr(task, field, value)
        task.cwd = str(settings.BASE_DIR)
        task.full_clean()
        task.save()
        return created

    def demo_schedules(self) -> None:
        """The smoke tests every 15 minutes, once (running the command again adds none)."""
        task = Task.objects.get(name="smoke-tests")
        if not task.schedules.exists():
            Schedule.objects.create(task=task, cron="*/15 * * * *", overlap="skip")
            self.stdout.write("Scheduled smoke-tests every 15 minutes.")

    def first_superuser(self, username: str) -> None:
        users = get_user_model().objects
        if users.filter(is_staff=True).exists():
            return
        if users.filter(username=username).exists():
            raise CommandError(
                f"User '{username}' exists but is not staff; choose another with --username."
            )
        password = secrets.token_urlsafe(12)
        users.create_superuser(username, "", password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created superuser '{username}' with password: {password}\n"
                "  (shown once; change it in the admin, or with manage.py changepassword)"
            )
        )
