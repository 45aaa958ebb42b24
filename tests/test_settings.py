"""Start-up configuration: a bad value stops it with one line naming the variable."""

import os
import subprocess
import sys

import pytest

from taskrunner import conf
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


@pytest.mark.parametrize("setting", conf.SETTINGS, ids=lambda setting: setting.name)
def test_each_engine_setting_out_of_bounds_is_a_system_check_error_with_its_id(setting):
    from django.test import override_settings

    from taskrunner.checks import check_engine_settings

    assert check_engine_settings(None) == []
    below = setting.kind(setting.minimum) - (1 if setting.kind is int else setting.minimum / 2)
    for bad in (below, "many"):
        with override_settings(**{setting.name: bad}):
            errors = [e for e in check_engine_settings(None) if e.id == setting.check_id]
        assert len(errors) == 1, (setting.name, bad)
        assert setting.name in errors[0].msg


def test_engine_settings_are_read_from_the_environment_by_name():
    env = {**os.environ, "TASKRUNNER_SSE_MAX_STREAMS_PER_USER": "7", "SECRET_KEY": "x"}
    code = "from django.conf import settings; print(settings.TASKRUNNER_SSE_MAX_STREAMS_PER_USER)"
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env={**env, "DJANGO_SETTINGS_MODULE": "backoffice.settings"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.stdout.strip() == "7", result.stderr
