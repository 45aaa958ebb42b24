"""Start-up configuration: a bad value stops it with one line naming the variable."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def check(**env: str) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "SECRET_KEY": "insecure-test-only-key", "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "nonsense"),
        ("DATABASE_URL", "mysql://db/x"),
        ("TASKRUNNER_MAX_LINE_BYTES", "lots"),
        ("TASKRUNNER_HEARTBEAT_SECONDS", "soon"),
        ("SECURE_HSTS_SECONDS", "1.5"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_a_bad_value_names_its_variable_in_one_line(variable, value):
    result = check(**{variable: value})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr


def test_secret_key_is_required_when_debug_is_off():
    result = check(SECRET_KEY="")
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_deploy_checks_are_clean_with_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "SECRET_KEY": "a-long-random-production-key-" + "x" * 40,
            "ALLOWED_HOSTS": "backoffice.example.com",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
