"""Django's own tasks (`django.tasks`) as supervised runs, through real workers and processes.

The functions are in tests/djangotasks.py: the worker's child imports them
from the repository root, as it would a site's tasks module.
"""

import dataclasses
import json
import subprocess
import sys

import httpx
import psutil
import pytest
from api_helpers import Stream, bearer

from tests.conftest import (
    ROOT,
    all_stopped,
    gone,
    none_stopped,
    processes_with_key,
    stored_events,
    subprocess_env,
    wait_for,
)


@pytest.fixture(params=["cold", "warm"])
def django_worker(request, start_worker):
    """A worker starting Django tasks' children cold, or forked from its warm process."""
    if request.param == "cold":
        started = start_worker(env={"TASKRUNNER_WARM_STARTS": "false"})
    else:
        started = start_worker()
        wait_for(lambda: "warm process ready" in started.log(), 60)
    started.mode = request.param
    return started


def started_as(worker, run_id: int) -> str:
    """How the worker says it started a run: `warm` or `cold`."""
    marker = f"run started run_id={run_id} "
    line = next(line for line in worker.log().splitlines() if marker in line)
    return line.rsplit("start=", 1)[1].strip()


def run_of(result):
    from taskrunner.models import Run

    return Run.objects.select_related("task").get(pk=int(result.id))


def final_run(result, timeout: float = 30.0):
    from taskrunner.models import FINAL_STATUSES, Run

    def final():
        run = Run.objects.get(pk=int(result.id))
        return run if run.status in FINAL_STATUSES else None

    return wait_for(final, timeout)


def log_text(run_id: int) -> str:
    return "\n".join(e.text for e in stored_events(run_id, "log"))


def result_from_another_process(result_id: str) -> dict:
    """get_result in a fresh Python process, as a web process or a script would call it."""
    code = (
        "import json, django; django.setup()\n"
        "from django.tasks import default_task_backend\n"
        f"r = default_task_backend.get_result({result_id!r})\n"
        "print(json.dumps({'status': r.status, 'id': r.id, 'args': r.args, 'kwargs': r.kwargs,\n"
        "  'return_value': r.return_value if r.status == 'SUCCESSFUL' else None,\n"
        "  'errors': [[e.exception_class_path, e.traceback] for e in r.errors],\n"
        "  'module_path': r.task.module_path}))\n"
    )
    env = subprocess_env({"DJANGO_SETTINGS_MODULE": "backoffice.settings"})
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_function_returns_its_value_to_get_result_in_another_process(django_worker):
    from django.tasks.signals import task_enqueued

    from taskrunner.models import ActionKind, RunStatus
    from tests.djangotasks import add

    enqueued = []

    def receiver(sender, task_result, **kwargs):
        enqueued.append(task_result.id)

    task_enqueued.connect(receiver)
    try:
        result = add.enqueue(2, 3, scale=10)
    finally:
        task_enqueued.disconnect(receiver)
    assert enqueued == [result.id]
    assert result.status == "READY"
    run = run_of(result)
    assert result.id == str(run.pk)
    assert run.task.name == "django-tests-djangotasks-add"
    assert run.params == {"args": [2, 3], "kwargs": {"scale": 10}}
    action = run.actions.get()
    assert (action.action, action.via) == (ActionKind.START, "django")

    run = final_run(result)
    assert run.status == RunStatus.SUCCEEDED, log_text(run.pk)
    assert "adding 2 and 3" in log_text(run.pk)
    assert started_as(django_worker, run.pk) == django_worker.mode
    seen = result_from_another_process(result.id)
    assert seen["status"] == "SUCCESSFUL"
    assert seen["return_value"] == {"sum": 50, "args": [2, 3]}
    assert (seen["args"], seen["kwargs"]) == ([2, 3], {"scale": 10})
    assert seen["module_path"] == "tests.djangotasks.add"
    result.refresh()
    assert result.status == "SUCCESSFUL" and result.return_value == {"sum": 50, "args": [2, 3]}
    assert result.started_at is not None and result.finished_at is not None


def test_a_raising_function_fails_with_its_exception_and_traceback(django_worker):
    from tests.djangotasks import explode

    result = explode.enqueue("the report broke")
    run = final_run(result)
    assert run.status == "failed"
    log = log_text(run.pk)
    assert "Traceback (most recent call last)" in log
    assert "ReportFailed: the report broke" in log
    seen = result_from_another_process(result.id)
    assert seen["status"] == "FAILED"
    class_path, traceback = seen["errors"][-1]
    assert class_path == "tests.djangotasks.ReportFailed"
    assert "the report broke" in traceback and "Traceback" in traceback
    result.refresh()
    assert result.errors[-1].exception_class.__name__ == "ReportFailed"


def test_pausing_stops_every_process_resuming_continues_aborting_fails_it(django_worker):
    from taskrunner.models import Run
    from tests.djangotasks import sleeper

    result = sleeper.enqueue(120)
    run = wait_for(lambda: Run.objects.filter(pk=int(result.id), pid__isnull=False).first(), 30)
    wait_for(lambda: "tick 3" in log_text(run.pk), 30)
    assert started_as(django_worker, run.pk) == django_worker.mode
    # A forked child's own environment block is the warm process's: the key
    # scan cannot see it, so the test finds it as the worker does, by identity.
    procs = [psutil.Process(run.pid), *psutil.Process(run.pid).children(recursive=True)]
    procs += [p for p in processes_with_key(run.process_key) if p.pid not in {q.pid for q in procs}]
    assert procs[0].create_time() == pytest.approx(run.pid_create_time, abs=0.01)
    assert result_from_another_process(result.id)["status"] == "RUNNING"

    run.request("pause", via="cli")
    wait_for(lambda: all_stopped(procs), 10)
    wait_for(lambda: Run.objects.get(pk=run.pk).status == "paused", 10)
    assert result_from_another_process(result.id)["status"] == "RUNNING"  # paused is RUNNING
    run.request("resume", via="cli")
    wait_for(lambda: none_stopped(procs), 10)
    ticks = log_text(run.pk).count("tick ")
    wait_for(lambda: log_text(run.pk).count("tick ") > ticks + 2, 10)  # it continues

    run.request("abort", via="cli")
    run = final_run(result)
    assert run.status == "aborted"
    wait_for(lambda: gone(procs), 10)
    assert processes_with_key(run.process_key) == []
    assert not psutil.pid_exists(run.pid) or gone([procs[0]])
    seen = result_from_another_process(result.id)
    assert seen["status"] == "FAILED"
    assert seen["errors"][-1][0] == "taskrunner.exceptions.RunAborted"


def test_logging_and_print_lines_arrive_live_over_sse(api, tokens, django_worker):
    from tests.djangotasks import chatty

    result = chatty.enqueue("now")
    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"]), timeout=20) as http:
        url = f"/api/runs/{result.id}/"
        with Stream(http, f"{url}events/") as stream:
            wanted = {"logged by logging now", "printed by print now", "progress"}

            def both_seen(ev):
                if ev.event == "log":
                    wanted.difference_update([w for w in wanted if w in ev.data["line"]])
                if ev.event == "progress":
                    wanted.discard("progress")
                return not wanted

            got = stream.until(both_seen)
            # The function is still waiting for its input line: these arrived live.
            assert http.get(url).json()["status"] == "running"
            assert any(ev.event == "progress" and ev.data["message"] == "halfway" for ev in got)
            logged = [ev for ev in got if ev.event == "log" and "by logging" in ev.data["line"]]
            assert logged[0].data["stream"] == "stderr"
            assert "INFO tests.djangotasks" in logged[0].data["line"]
            assert http.post(f"{url}input/", json={"data": "hello"}).status_code == 202
            rest = stream.rest()
        assert rest[-1].event == "end" and rest[-1].data["status"] == "succeeded"
    result.refresh()
    assert result.return_value == {"got": "hello"}


def test_a_higher_priority_starts_first(start_worker):
    from tests.djangotasks import marker

    low = marker.enqueue("low")
    high = marker.using(priority=50).enqueue("high")
    assert run_of(high).priority == 50
    start_worker("--concurrency", "1")
    low_run, high_run = final_run(low), final_run(high)
    assert (low_run.status, high_run.status) == ("succeeded", "succeeded")
    assert high_run.finished_at <= low_run.started_at
    high.refresh()
    assert high.task.priority == 50 and high.return_value == "high"


def test_the_claim_orders_by_priority_then_age(transactional_db):
    from taskrunner.models import Run, Task, Worker

    task = Task.objects.create(name="t", argv=["true"], max_concurrent=2)
    other = Task.objects.create(name="u", argv=["true"], max_concurrent=5)
    first = Run.objects.create(task=task)
    second = Run.objects.create(task=task, priority=5)
    third = Run.objects.create(task=task, priority=5)
    elsewhere = Run.objects.create(task=other, priority=-3)
    urgent = Run.objects.create(task=other, priority=9)
    worker = Worker.objects.create(hostname="h", pid=1)
    # `t` has two slots: its two priority-5 runs take them, the older first.
    assert Run.objects.claim(worker, 10) == [urgent.pk, second.pk, third.pk, elsewhere.pk]
    assert Run.objects.get(pk=first.pk).status == "queued"


def test_an_async_function_runs(django_worker):
    from tests.djangotasks import async_double

    result = async_double.enqueue(21)
    assert final_run(result).status == "succeeded"
    result.refresh()
    assert result.return_value == 42


def test_invalid_use_raises_djangos_errors_and_records_nothing(transactional_db):
    from django.tasks import default_task_backend, task
    from django.tasks.base import Task as DjangoTask
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist

    from taskrunner.models import Run, Task
    from tests.djangotasks import add

    def nested(x):
        return x

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)
    with pytest.raises(InvalidTask, match="Queue 'nope'"):
        add.using(queue_name="nope")

    def unchecked(**fields):
        """A Task built without Django's own check, to prove enqueue checks again."""
        made = object.__new__(DjangoTask)
        values = {f.name: getattr(add, f.name) for f in dataclasses.fields(DjangoTask)}
        for name, value in {**values, **fields}.items():
            object.__setattr__(made, name, value)
        return made

    with pytest.raises(InvalidTask, match="module level"):
        default_task_backend.enqueue(unchecked(func=nested), [1], {})
    with pytest.raises(InvalidTask, match="Queue 'nope'"):
        default_task_backend.enqueue(unchecked(queue_name="nope"), [1, 2], {})
    with pytest.raises(TypeError, match="Unsupported type"):
        add.enqueue(object(), 1)
    with pytest.raises(ValueError, match="JSON"):
        add.enqueue(float("nan"), 1)
    assert Run.objects.count() == 0
    assert Task.objects.count() == 0
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("12345")
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-a-number")
    plain = Task.objects.create(name="plain", argv=["true"]).start(via="cli")
    with pytest.raises(TaskResultDoesNotExist):  # a run, but not of a Django task
        default_task_backend.get_result(str(plain.pk))


def test_a_run_enqueued_in_a_rolled_back_transaction_never_runs(worker):
    from django.db import transaction

    from taskrunner.models import Run
    from tests.djangotasks import marker

    seen_inside = []

    def enqueue_then_fail():
        with transaction.atomic():
            seen_inside.append(marker.enqueue("rolled back"))
            assert Run.objects.filter(pk=int(seen_inside[0].id)).exists()  # inside, it is there
            raise RuntimeError("roll it back")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    rolled_back = seen_inside[0]
    committed = marker.enqueue("committed")
    assert final_run(committed).status == "succeeded"
    # SQLite may give the committed run the rolled-back one's id: look at the arguments.
    assert [run.params["args"] for run in Run.objects.all()] == [["committed"]]
    assert rolled_back.args == ["rolled back"]


def test_the_functions_process_is_the_runs_own(django_worker):
    """Its own session and group, the run's key, no inherited database connection."""
    from tests.djangotasks import whoami

    result = whoami.enqueue()
    run = final_run(result)
    assert run.status == "succeeded", log_text(run.pk)
    assert started_as(django_worker, run.pk) == django_worker.mode
    seen = run.result
    assert seen["pid"] == run.pid == seen["sid"] == seen["pgid"] == run.pgid
    assert (seen["key"], seen["run_id"]) == (run.process_key, str(run.pk))
    assert seen["runs"] >= 1
    if django_worker.mode == "cold":
        assert seen["ppid"] == django_worker.pid
    else:
        warm = psutil.Process(seen["ppid"])  # the warm process, a child of the worker
        assert "taskrunner.zygote" in " ".join(warm.cmdline())
        assert warm.ppid() == django_worker.pid
        # It holds no database connection a fork could inherit (PostgreSQL: no
        # socket; SQLite: the database file not open).
        from django.db import connection

        assert warm.net_connections(kind="inet") == []
        database = str(connection.settings_dict["NAME"])
        assert not [f for f in warm.open_files() if f.path.startswith(database)]


def test_options_set_the_task_rows_the_backend_makes(transactional_db, settings):
    from django.tasks import task_backends
    from django.tasks.exceptions import InvalidTaskBackend

    from taskrunner.models import Task
    from tests.djangotasks import add, marker

    add.enqueue(1, 2)
    made = Task.objects.get(name="django-tests-djangotasks-add")
    assert (made.title, made.max_concurrent, made.timeout) == ("tests.djangotasks.add", 1000, None)
    assert made.argv[1:] == ["-m", "taskrunner.djangotask", "tests.djangotasks.add"]
    assert "DATABASE_URL" in made.pass_env
    backend = "taskrunner.backends.SupervisedBackend"
    options = {"timeout": 60, "grace": 3, "max_concurrent": 2}
    settings.TASKS = {"default": {"BACKEND": backend, "OPTIONS": options}}
    marker.enqueue("x")
    made = Task.objects.get(name="django-tests-djangotasks-marker")
    assert (made.timeout, made.grace, made.max_concurrent) == (60, 3, 2)
    settings.TASKS = {"default": {"BACKEND": backend, "OPTIONS": {"timeuot": 1}}}
    with pytest.raises(InvalidTaskBackend, match="timeuot"):
        task_backends["default"]  # noqa: B018 - creating it is what fails


def warm_processes(worker) -> list[psutil.Process]:
    children = psutil.Process(worker.pid).children()
    return [p for p in children if "taskrunner.zygote" in p.cmdline()]


def test_a_warm_process_that_dies_is_restarted_and_runs_never_wait_for_it(start_worker):
    import signal

    from tests.djangotasks import add, whoami

    worker = start_worker()
    wait_for(lambda: "warm process ready" in worker.log(), 60)
    [warm] = warm_processes(worker)
    first = add.enqueue(1, 1)
    assert final_run(first).status == "succeeded"
    assert started_as(worker, int(first.id)) == "warm"

    warm.kill()  # as the OOM killer would
    wait_for(lambda: "warm process lost" in worker.log(), 10)
    # Meanwhile runs start cold (or warm, once it is back), never failing for it.
    second = add.enqueue(2, 2)
    run = final_run(second)
    assert run.status == "succeeded" and run.result["sum"] == 4
    assert started_as(worker, run.pk) in ("cold", "warm")

    # A new warm process, a child of the worker; the dead one reaped.
    wait_for(lambda: "warm process back" in worker.log(), 60)
    [new] = warm_processes(worker)
    assert new.pid != warm.pid and new.ppid() == worker.pid
    assert warm.pid not in [p.pid for p in psutil.Process(worker.pid).children()]
    third = final_run(whoami.enqueue())
    assert third.status == "succeeded", log_text(third.pk)
    assert started_as(worker, third.pk) == "warm"
    assert third.result["ppid"] == new.pid  # forked from the new one

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    wait_for(lambda: gone([new]), 10)  # the new warm process ends with its worker


def test_run_after_holds_the_run_queued_until_then(start_worker):
    """A deferred task's run waits for its time while later ones run, then runs."""
    from datetime import timedelta

    from django.utils import timezone

    from taskrunner.models import Run
    from tests.djangotasks import add

    later = timezone.now() + timedelta(hours=1)
    held = add.using(run_after=later).enqueue(1, 2)
    assert run_of(held).run_after == later
    start_worker()
    # A run enqueued after it, due at once, runs while the deferred one waits.
    assert final_run(add.enqueue(3, 4)).status == "succeeded"
    assert run_of(held).status == "queued"
    # Its time comes (moved, rather than waited for): the worker starts it.
    Run.objects.filter(pk=int(held.id)).update(run_after=timezone.now())
    assert final_run(held).status == "succeeded"
    assert add.get_result(held.id).return_value == {"sum": 3, "args": [1, 2]}
