"""The command line and the child's environment (issue 15's "also decide" items).

- `--user` names a staff user or is refused; `define --user` follows the
  admin's rule: only a superuser changes what a task executes.
- `logs` on a terminal prints a child's escape sequences visibly escaped.
- A child does not inherit the site's SECRET_KEY and DATABASE_URL from its
  worker unless its task passes them.

Every command is a real `manage.py taskrunner` process; runs are real
children of a real worker.
"""

import json
import os
import pty
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission, User

from taskrunner.models import Run, RunStatus, Task
from tests.conftest import ROOT, stored_events, subprocess_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m back\x9b6n"


@pytest.fixture
def users(transactional_db):
    editor = User.objects.create_user("bob", is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(codename="change_task"))
    return {
        "alice": User.objects.create_superuser("alice", "", None),
        "bob": editor,
        "carol": User.objects.create_user("carol", is_staff=True),
        "dave": User.objects.create_user("dave"),
    }


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "taskrunner", *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def finished(run_id: int) -> Run:
    return wait_for(
        lambda: Run.objects.filter(pk=run_id, status__in=[RunStatus.SUCCEEDED]).first(), 30
    )


# --- --user -------------------------------------------------------------------


def test_user_must_be_staff(users):
    Task.objects.create(name="echo", argv=["echo", "hi"])
    for verb in (("start", "echo"), ("define", "echo", "--title", "T")):
        one_line_error(cli(*verb, "--user", "dave"), "dave", "not staff")
    assert not Run.objects.exists()
    assert Task.objects.get(name="echo").title == ""


def test_define_as_a_non_superuser_cannot_change_what_a_task_executes(users):
    Task.objects.create(name="echo", argv=["echo", "hi"], params=[])
    attacks = [
        ("--", "sh", "-c", "id"),
        ("--cwd", "/"),
        ("--env", "LD_PRELOAD=/tmp/x.so"),
        ("--pass-env", "SECRET_KEY"),
        ("--param", "remote"),
    ]
    for options in attacks:
        one_line_error(cli("define", "echo", "--user", "bob", *options), "bob", "superuser")
    one_line_error(cli("define", "new", "--user", "bob", "--", "id"), "create tasks")
    task = Task.objects.get(name="echo")
    assert (task.argv, task.cwd, task.env, task.pass_env, task.params) == (
        ["echo", "hi"], "", {}, [], []
    )  # fmt: skip
    assert not Task.objects.filter(name="new").exists()

    # What does not decide what runs needs change_task only; carol lacks it.
    assert cli("define", "echo", "--user", "bob", "--title", "Echo").returncode == 0
    one_line_error(cli("define", "echo", "--user", "carol", "--title", "X"), "may not change")
    result = cli("define", "echo", "--user", "alice", "--param", "x", "--", "echo", "{x}")
    assert result.returncode == 0, result.stderr
    task.refresh_from_db()
    assert (task.title, task.argv) == ("Echo", ["echo", "{x}"])


# --- logs on a terminal ----------------------------------------------------------


def read_on_a_terminal(*args: str) -> bytes:
    """Run the CLI with a pseudo-terminal as its standard output; what it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "taskrunner", *args],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        errors = proc.stderr.read()
        proc.stderr.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0, errors
    return b"".join(chunks)


def test_logs_escape_a_childs_control_sequences_on_a_terminal(users, worker):
    task = Task.objects.create(
        name="noisy",
        argv=[sys.executable, "-c", f"import sys; sys.stdout.write({ESCAPES!r} + '\\nplain\\n')"],
    )
    run = finished(task.start({}).pk)
    shown = read_on_a_terminal("logs", str(run.pk)).decode()
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown, repr(shown)
    assert "\\x1b]0;owned\\x07" in shown and "\\x9b6n" in shown
    assert "plain" in shown

    # Into a pipe (a file, another program) the stored text is kept as it is.
    piped = cli("logs", str(run.pk))
    assert piped.returncode == 0
    assert "\x1b]0;owned\x07" in piped.stdout
    # And --raw asks for it on a terminal too.
    assert "\x1b]0;owned\x07" in read_on_a_terminal("logs", str(run.pk), "--raw").decode()


# --- the child's environment -------------------------------------------------------

SHOW_ENV = [
    sys.executable,
    "-c",
    "import json, os; print(json.dumps({k: k in os.environ for k in "
    "['SECRET_KEY', 'DATABASE_URL', 'PATH', 'TASK_OWN']}))",
]


def test_children_do_not_inherit_the_sites_secrets_unless_passed(users, worker):
    plain = Task.objects.create(name="plain", argv=SHOW_ENV, env={"TASK_OWN": "1"})
    passing = Task.objects.create(name="passing", argv=SHOW_ENV, pass_env=["DATABASE_URL"])
    seen = {}
    for task in (plain, passing):
        run = finished(task.start({}).pk)
        [line] = [e.text for e in stored_events(run.pk, "log")]
        seen[task.name] = json.loads(line)
    # The worker has both (it is started with them): the child did not get them.
    assert seen["plain"] == {
        "SECRET_KEY": False, "DATABASE_URL": False, "PATH": True, "TASK_OWN": True
    }  # fmt: skip
    assert seen["passing"] == {
        "SECRET_KEY": False, "DATABASE_URL": True, "PATH": True, "TASK_OWN": False
    }  # fmt: skip
