"""`manage.py taskrunner`: every verb, run as a real process against the test database.

Runs need a real worker (the `worker` fixture); the CLI and the worker speak
only through the database, as they do in production.
"""

import json
import signal
import subprocess
import sys

import httpx
import psutil
import pytest

from taskrunner.models import ApiToken, Run, RunStatus, Task
from tests.conftest import ROOT, all_stopped, child_script, gone, subprocess_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

EXIT_FAILED, EXIT_ABORTED = 3, 4


@pytest.fixture
def users(transactional_db):
    """The personas' names and roles without passwords: hashing them costs
    seconds per test, and the command line never logs in."""
    from django.contrib.auth.models import User

    return {
        "alice": User.objects.create_superuser("alice", "", None),
        "bob": User.objects.create_user("bob", is_staff=True),
        "carol": User.objects.create_user("carol", is_staff=True),
        "dave": User.objects.create_user("dave"),
    }


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "manage.py", "taskrunner", *args]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `manage.py taskrunner ARGS` to completion and capture its output."""
    return subprocess.run(
        cli_argv(*args),
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_many(commands: list[tuple[str, ...]], timeout: float = 60) -> list:
    """Run several CLI processes at once (they only read, or touch distinct rows)."""
    procs = [
        subprocess.Popen(
            cli_argv(*args),
            cwd=ROOT,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    return results


def define(name: str, *args: str) -> None:
    result = cli("define", name, *args)
    assert result.returncode == 0, result.stderr


def define_chatty(name: str = "chatty") -> Task:
    # Through the ORM: `define` itself is tested on its own, and a process costs ~1 s.
    return Task.objects.create(
        name=name,
        argv=[*child_script("chatty"), "{count}", "{code}"],
        params=[
            {"name": "count", "type": "int", "default": 10, "required": False, "choices": None},
            {"name": "code", "type": "int", "default": 0, "required": False, "choices": None},
        ],
        grace=2,
    )


def define_endless(name: str = "endless") -> Task:
    return Task.objects.create(
        name=name, argv=[*child_script("numbered"), "--interval", "0.05", "--grandchild"], grace=2
    )


def one_line_error(result) -> str:
    """The error a failed command printed: exactly one line, no traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def run_family(run: Run) -> list[psutil.Process]:
    root = psutil.Process(run.pid)
    return [root, *root.children(recursive=True)]


# --- start --follow --------------------------------------------------------


def test_define_start_follow_prints_the_lines_in_order(worker, users):
    define_chatty()
    result = cli("start", "chatty", "--param", "count=40", "--user", "bob", "--follow")
    assert result.returncode == 0, result.stderr
    first, *lines = result.stdout.splitlines()
    run = Run.objects.get(pk=int(first))
    assert lines == [f"out {i}" for i in range(1, 41)]
    err_lines = result.stderr.splitlines()
    assert err_lines[:-1] == [f"err {i}" for i in range(5, 41, 5)]
    assert err_lines[-1] == f"run {run.pk} succeeded (exit code 0)"
    assert run.status == RunStatus.SUCCEEDED
    assert run.progress["message"] == "half way"
    assert run.requested_by.username == "bob"
    assert [(a.action, a.by, a.via) for a in run.actions.all()] == [("start", "bob", "cli")]


def test_a_failing_run_exits_non_zero_with_its_status_and_code(worker):
    define_chatty()
    result = cli("start", "chatty", "--param", "count=3", "--param", "code=7", "--follow")
    assert result.returncode == EXIT_FAILED, result.stderr
    run = Run.objects.get(pk=int(result.stdout.splitlines()[0]))
    assert (run.status, run.exit_code) == (RunStatus.FAILED, 7)
    assert result.stderr.splitlines()[-1].startswith(f"run {run.pk} failed (exit code 7)")
    status = json.loads(cli("status", str(run.pk), "--json").stdout)
    assert (status["status"], status["exit_code"]) == ("failed", 7)


# --- the other verbs -------------------------------------------------------


def test_start_returns_at_once_and_a_queued_run_aborts_at_once(users):
    define_chatty()
    result = cli("start", "chatty")  # no worker: the run stays queued
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit()
    run_id = result.stdout.strip()
    assert Run.objects.get(pk=run_id).status == RunStatus.QUEUED
    result = cli("abort", run_id, "--user", "alice")
    assert result.returncode == 0, result.stderr
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.ABORTED
    assert [(a.action, a.by, a.via) for a in run.actions.all()][-1] == ("abort", "alice", "cli")


def test_define_updates_only_what_is_given():
    define("job", "--title", "A job", "--timeout", "30", "--env", "A=1", "--param", "n:int=2",
           "--param", "mode=fast", "--choices", "mode=fast,slow", "--", "echo", "{n}")  # fmt: skip
    define("job", "--max-concurrent", "3", "--timeout", "none")
    task = Task.objects.get(name="job")
    assert task.argv == ["echo", "{n}"]
    assert (task.title, task.timeout, task.max_concurrent, task.env) == (
        "A job",
        None,
        3,
        {"A": "1"},
    )
    assert task.params == [
        {"name": "n", "type": "int", "default": 2, "required": False, "choices": None},
        {"name": "mode", "type": "str", "default": "fast", "required": False,
         "choices": ["fast", "slow"]},
    ]  # fmt: skip


def test_listing_verbs_status_logs_and_token(worker, users):
    define_chatty()
    finished = cli("start", "chatty", "--param", "count=12", "--follow")
    assert finished.returncode == 0, finished.stderr
    run_id = finished.stdout.splitlines()[0]
    tasks, runs, failed_runs, status, logs, tail = cli_many(
        [
            ("tasks",),
            ("runs", "--task", "chatty"),
            ("runs", "--status", "failed"),
            ("status", run_id),
            ("logs", run_id),
            ("logs", run_id, "--tail", "2"),
        ]
    )
    for result in (tasks, runs, failed_runs, status, logs, tail):
        assert result.returncode == 0, (result.args, result.stderr)
    assert "chatty" in tasks.stdout and "count:int=10" in tasks.stdout
    assert runs.stdout.splitlines()[0].split()[:3] == ["ID", "TASK", "STATUS"]
    assert runs.stdout.splitlines()[1].split()[:3] == [run_id, "chatty", "succeeded"]
    assert failed_runs.stdout.strip() == "No runs."
    assert "status: succeeded" in status.stdout and "start   by - via cli" in status.stdout
    assert logs.stdout.splitlines() == [f"out {i}" for i in range(1, 13)]
    assert logs.stderr.splitlines() == ["err 5", "err 10"]
    # The last two lines; how stdout and stderr interleave is up to the pipes.
    tail_out, tail_err = tail.stdout.splitlines(), tail.stderr.splitlines()
    assert len(tail_out) + len(tail_err) == 2
    assert tail_out == [f"out {i}" for i in range(13 - len(tail_out), 13)]


def test_token_create_prints_a_token_the_api_accepts(server, users):
    result = cli("token", "create", "bob")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip().splitlines()[-1]
    assert ApiToken.objects.get(user=users["bob"]).prefix == secret[:12]
    answer = httpx.get(f"{server.url}/api/tasks/", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{server.url}/api/tasks/").status_code == 401


def test_pause_resume_abort_and_logs_follow(worker, users):
    define_endless()
    run_id = cli("start", "endless", "--user", "bob").stdout.strip()
    follower = subprocess.Popen(
        cli_argv("logs", run_id, "--follow"),
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run = wait_for(lambda: Run.objects.filter(pk=run_id, status="running", pid__isnull=False)
                       .first())  # fmt: skip
        family = wait_for(lambda: len(run_family(run)) >= 2 and run_family(run))
        assert cli("pause", run_id, "--user", "bob").returncode == 0
        wait_for(lambda: all_stopped(family), timeout=5)
        wait_for(lambda: Run.objects.get(pk=run_id).status == RunStatus.PAUSED)
        assert cli("resume", run_id, "--user", "carol").returncode == 0
        wait_for(lambda: Run.objects.get(pk=run_id).status == RunStatus.RUNNING)
        assert not all_stopped(family)
        assert cli("input", run_id, "hello").returncode == 0
        assert cli("abort", run_id, "--user", "alice").returncode == 0
        wait_for(lambda: Run.objects.get(pk=run_id).status == RunStatus.ABORTED)
        wait_for(lambda: gone(family), timeout=10)
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == EXIT_ABORTED, err
    numbers = [int(line.split()[1]) for line in out.splitlines() if line.startswith("line ")]
    assert numbers == list(range(1, len(numbers) + 1)) and numbers, out
    assert err.strip().splitlines()[-1].startswith(f"run {run_id} aborted")
    actions = [(a.action, a.by, a.via) for a in Run.objects.get(pk=run_id).actions.all()]
    assert actions == [
        ("start", "bob", "cli"),
        ("pause", "bob", "cli"),
        ("resume", "carol", "cli"),
        ("input", "", "cli"),
        ("abort", "alice", "cli"),
    ]


# --- errors: one line on stderr, non-zero, never a traceback ---------------


def test_every_error_is_one_clear_line(users):
    define_chatty()
    done = Task.objects.get(name="chatty").start({})
    Run.objects.filter(pk=done.pk).update(status=RunStatus.SUCCEEDED)
    finished = str(done.pk)
    cases = [
        (("start", "nope"), "No task named 'nope'"),
        (("start", "chatty", "--param", "count=many"), "count: must be an integer"),
        (("start", "chatty", "--param", "colour=red"), "colour: unknown parameter"),
        (("start", "chatty", "--param", "count"), "--param wants KEY=VALUE"),
        (("start", "chatty", "--user", "nobody"), "No user named 'nobody'"),
        (("status", "999999"), "No run 999999"),
        (("status", "abc"), "a run id is a number"),
        (("abort", finished), "cannot abort"),
        (("token", "create", "dave"), "not staff"),
        (("define", "brand-new"), "give its command after --"),
        (("define", "x", "--param", "n:complex", "--", "true"), "type must be one of"),
        (("define", "not a slug", "--", "true"), "name:"),
        (("bogus",), "invalid choice"),
    ]
    results = cli_many([args for args, _ in cases])
    for (args, expected), result in zip(cases, results, strict=True):
        line = one_line_error(result)
        assert expected in line, (args, line)
        assert result.stdout == "", (args, result.stdout)
    assert not Task.objects.filter(name__in=["x", "brand-new", "not a slug"]).exists()


def test_follow_of_a_run_that_never_starts_stops_on_ctrl_c():
    """Ctrl-C while following ends the CLI quietly; the run itself goes on."""
    define_chatty()
    proc = subprocess.Popen(
        cli_argv("start", "chatty", "--follow"),
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = proc.stdout.readline().strip()  # printed just before it starts following
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert Run.objects.get(pk=run_id).status == RunStatus.QUEUED


def test_worker_verb_passes_its_options_to_the_supervisor():
    """--max-runs 1 runs one of the two queued runs and exits; --until-idle the rest."""
    task = define_chatty()
    task.max_concurrent = 2
    task.save()
    first, second = task.start({"count": 2}), task.start({"count": 2})
    result = cli("worker", "--concurrency", "1", "--max-runs", "1")
    assert result.returncode == 0, result.stderr
    statuses = {Run.objects.get(pk=first.pk).status, Run.objects.get(pk=second.pk).status}
    assert statuses == {RunStatus.SUCCEEDED, RunStatus.QUEUED}
    result = cli("worker", "--until-idle")
    assert result.returncode == 0, result.stderr
    assert set(Run.objects.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}


# --- exit codes and --tail, as the README states them ------------------------

EXIT_TIMED_OUT, EXIT_LOST = 5, 6


def test_a_followed_run_that_times_out_exits_5(worker, users):
    Task.objects.create(name="slow", argv=[*child_script("numbered")], timeout=0.5, grace=1)
    result = cli("start", "slow", "--follow")
    run = Run.objects.get(pk=result.stdout.splitlines()[0])
    assert run.status == RunStatus.TIMED_OUT
    assert result.returncode == EXIT_TIMED_OUT, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"run {run.pk} timed_out")


def test_a_followed_run_whose_worker_dies_exits_6(start_worker, users):
    first = start_worker()
    define_endless()
    run_id = cli("start", "endless").stdout.strip()
    follower = subprocess.Popen(
        cli_argv("logs", run_id, "--follow"),
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: Run.objects.filter(pk=run_id, status="running", pid__isnull=False)
                 .exists())  # fmt: skip
        first.signal(signal.SIGKILL)
        first.wait(timeout=10)
        start_worker()  # on the same host: it marks the dead worker's run lost
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert Run.objects.get(pk=run_id).status == RunStatus.LOST
    assert follower.returncode == EXIT_LOST, err
    assert err.strip().splitlines()[-1].startswith(f"run {run_id} lost")


def test_errors_exit_1_and_a_malformed_command_line_exits_2(users):
    define_chatty()
    cases = [
        (("start", "nope"), 1),  # unknown task
        (("status", "999999"), 1),  # unknown run
        (("start", "chatty", "--user", "nobody"), 1),  # unknown user
        (("start", "chatty", "--param", "count=many"), 1),  # bad parameter
        (("bogus",), 2),  # no such verb
        (("logs",), 2),  # RUN missing
        (("tasks", "--no-such-option"), 2),
        (("logs", "1", "--tail", "many"), 2),
    ]
    results = cli_many([args for args, _ in cases])
    for (args, code), result in zip(cases, results, strict=True):
        one_line_error(result)
        assert result.returncode == code, (args, result.returncode, result.stderr)


def test_logs_tail_prints_exactly_the_last_n_lines(worker, users):
    task = Task.objects.create(name="ten", argv=[*child_script("numbered"), "--count", "10"])
    run = task.start({})
    wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED, timeout=30)
    three, one, more_than_all, everything = cli_many(
        [
            ("logs", str(run.pk), "--tail", "3"),
            ("logs", str(run.pk), "--tail", "1"),
            ("logs", str(run.pk), "--tail", "50"),
            ("logs", str(run.pk)),
        ]
    )
    for result in (three, one, more_than_all, everything):
        assert result.returncode == 0, result.stderr
    assert three.stdout.splitlines() == ["line 8", "line 9", "line 10"]
    assert one.stdout.splitlines() == ["line 10"]
    assert more_than_all.stdout.splitlines() == [f"line {i}" for i in range(1, 11)]
    assert everything.stdout == more_than_all.stdout
