"""The test database's URL reaches workers, servers and the command line whole.

A PostgreSQL server that checks passwords needs the password in every
process a test starts; tests/conftest.py builds that URL, and these tests
read it back the way the settings do (django-environ).
"""

import subprocess
import sys

import environ
import pytest
from django.db import connection

from tests.conftest import ROOT, database_url, subprocess_env

HAIRY = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "test_db-1",
    "USER": "us er@x",
    "PASSWORD": "p@ss:w/rd%?#& é",
    "HOST": "127.0.0.1",
    "PORT": "5433",
}


def test_the_url_keeps_user_password_host_port_and_name():
    parsed = environ.Env.db_url_config(database_url(HAIRY))
    got = {key: str(parsed[key]) for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}
    assert got == {key: HAIRY[key] for key in got}


def test_subprocess_env_names_the_test_database(db):
    parsed = environ.Env.db_url_config(subprocess_env()["DATABASE_URL"])
    settings = connection.settings_dict
    # The settings may swap in a subclass of Django's backend (taskrunner.db.sqlite3).
    assert parsed["ENGINE"].rsplit(".", 1)[1] == settings["ENGINE"].rsplit(".", 1)[1]
    for key in ("NAME", "USER", "PASSWORD", "HOST"):
        assert str(parsed[key] or "") == str(settings[key] or ""), key
    assert str(parsed["PORT"] or "") == str(settings["PORT"] or "")


@pytest.mark.django_db(transaction=True)
def test_a_process_started_by_a_test_connects_with_the_password():
    """PostgreSQL only: a role with a password; the child process logs in as it.

    The shared server trusts local connections, so the password itself is not
    checked there: the child prints the password it was given, which must be
    the one the role was created with.
    """
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no users or passwords")
    role, password = "taskrunner_test_pw_role", "s3cret@host:5432/db?x=1"
    settings = connection.settings_dict
    before = (settings["USER"], settings["PASSWORD"])
    with connection.cursor() as cursor:
        cursor.execute(f"DROP ROLE IF EXISTS {role}")
        cursor.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", [password])
    try:
        settings["USER"], settings["PASSWORD"] = role, password
        env = subprocess_env()
        settings["USER"], settings["PASSWORD"] = before
        code = (
            "import django; django.setup(); from django.db import connection as c; "
            "cur = c.cursor(); cur.execute('select current_user, current_database()'); "
            "print(*cur.fetchone(), sep='\\n'); print(c.settings_dict['PASSWORD'])"
        )
        env["DJANGO_SETTINGS_MODULE"] = "backoffice.settings"
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [role, settings["NAME"], password]
    finally:
        settings["USER"], settings["PASSWORD"] = before
        with connection.cursor() as cursor:
            cursor.execute(f"DROP ROLE IF EXISTS {role}")
