"""Parameter values as an attacker with only `start_run` sends them (findings 2 and 10).

Through the API, the start form of the task page and the command line (a real
process); the allowed forms are run by a real worker and a real child that
prints the argv it got.
"""

import json
import subprocess
import sys

import pytest
from django.test import Client

from taskrunner.models import Run, RunStatus, Task
from tests.conftest import ROOT, stored_events, subprocess_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# A child that prints its arguments as JSON and exits 0.
PRINT_ARGV = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
OPTION_VALUES = ["--upload-pack=touch /tmp/pwned; git-upload-pack", "-oProxyCommand=id", "-"]
NON_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999"]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def starter(personas) -> Client:
    client = Client()
    client.force_login(personas["bob"])  # start_run and control_run, nothing else
    return client


def define(name: str, argv: list[str], params: list[dict]) -> Task:
    task = Task(name=name, argv=argv, params=params)
    task.full_clean()
    task.save()
    return task


def api_start(client: Client, name: str, params: dict):
    return client.post(
        f"/api/tasks/{name}/runs/", json.dumps({"params": params}), content_type="application/json"
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "taskrunner", *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def printed_argv(run: Run) -> list[str]:
    run = wait_for(lambda: Run.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(), 30)
    line = next((e.text for e in stored_events(run.pk, "log")), None)
    return json.loads(line)


# --- finding 2: option injection through {NAME} ----------------------------------


@pytest.mark.parametrize("value", OPTION_VALUES)
def test_a_value_beginning_with_a_dash_is_refused_everywhere(personas, starter, value):
    define("fetch", ["git", "fetch", "{remote}"], [{"name": "remote", "type": "str"}])

    response = api_start(starter, "fetch", {"remote": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and set(error["fields"]) == {"params.remote"}
    assert "'-'" in error["fields"]["params.remote"]

    page = starter.post("/tasks/fetch/start/", {"remote": value}, HTTP_ACCEPT="application/json")
    assert page.status_code == 400 and "remote" in page.json()["error"]["message"]

    result = cli("start", "fetch", "--param", f"remote={value}", "--user", "bob")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "remote" in result.stderr, result.stderr
    assert not Run.objects.exists()  # nothing was queued by any path


def test_a_declaration_allows_a_dash_and_the_bound_form_keeps_it_an_option_value(
    personas, starter, worker
):
    define(
        "grep",
        [*PRINT_ARGV, "--regexp={pattern}", "--", "{path}"],
        [{"name": "pattern", "type": "str", "allow_dash": True}, {"name": "path", "type": "str"}],
    )
    response = api_start(starter, "grep", {"pattern": "-oProxyCommand=id", "path": "notes.txt"})
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert printed_argv(run) == ["--regexp=-oProxyCommand=id", "--", "notes.txt"]


def test_a_pattern_must_match_the_whole_value(personas, starter, worker):
    define(
        "fetch",
        [*PRINT_ARGV, "{remote}"],
        [{"name": "remote", "type": "str", "pattern": r"[a-z][a-z0-9-]*"}],
    )
    for bad in ["origin; id", "Origin", "origin\n", "a b"]:
        response = api_start(starter, "fetch", {"remote": bad})
        assert response.status_code == 400, bad
        assert set(response.json()["error"]["fields"]) == {"params.remote"}
    assert not Run.objects.exists()
    response = api_start(starter, "fetch", {"remote": "upstream-2"})
    assert response.status_code == 202
    assert printed_argv(Run.objects.get(pk=response.json()["id"])) == ["upstream-2"]


def test_a_bad_declaration_is_refused_when_it_is_saved(personas):
    define("fetch", ["git", "fetch", "{remote}"], [{"name": "remote", "type": "str"}])
    cases = [
        ("--param", "remote", "--pattern", "remote=(unclosed"),  # not a regular expression
        ("--param", "remote=--all"),  # a default the dash rule would refuse
        ("--param", "remote=eu", "--pattern", "remote=[a-z]", "--choices", "remote=eu,usa"),
    ]
    for options in cases:
        result = cli("define", "fetch", *options)
        assert result.returncode == 1, result
        assert result.stderr.count("\n") == 1 and "remote" in result.stderr, result.stderr
    assert Task.objects.get(name="fetch").params == [
        {"name": "remote", "type": "str", "default": None, "required": True, "choices": None}
    ]
    # The command line's own way to declare both.
    result = cli(
        "define", "fetch", "--param", "remote=--all", "--allow-dash", "remote",
        "--pattern", "remote=-{0,2}[a-z]+",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = Task.objects.get(name="fetch").params[0]
    assert (spec["default"], spec["allow_dash"], spec["pattern"]) == ("--all", True, "-{0,2}[a-z]+")


# --- finding 10: non-finite floats are a 400, never a 500 -----------------------


def test_non_finite_floats_are_refused_by_name(personas, starter):
    define("crawl", [*PRINT_ARGV, "{rate}"], [{"name": "rate", "type": "float", "default": 5}])
    for value in NON_FINITE:
        response = api_start(starter, "crawl", {"rate": value})
        assert response.status_code == 400, (value, response.content)
        assert set(response.json()["error"]["fields"]) == {"params.rate"}, value

        page = starter.post("/tasks/crawl/start/", {"rate": value}, HTTP_ACCEPT="application/json")
        assert page.status_code == 400 and "rate" in page.json()["error"]["message"], value

    # The same as JSON numbers: 1e999 parses to infinity, NaN is not JSON.
    for body in ['{"params": {"rate": 1e999}}', '{"params": {"rate": NaN}}']:
        response = starter.post("/api/tasks/crawl/runs/", body, content_type="application/json")
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "invalid"
        assert set(response.json()["error"]["fields"]) == {"params.rate"}, body

    for value in ("nan", "1e999"):
        result = cli("start", "crawl", "--param", f"rate={value}")
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "rate" in result.stderr, result.stderr
    assert not Run.objects.exists()
    assert api_start(starter, "crawl", {"rate": "2.5"}).status_code == 202
