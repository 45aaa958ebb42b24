"""The demo jobs of `backoffice/jobs/`, end to end through a real worker, and `setup_demo`."""

import hashlib
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from taskrunner.events import store
from taskrunner.models import Artifact, Run, RunStatus, Task
from tests.conftest import ROOT, all_stopped, gone, subprocess_env, wait_for
from tests.test_cli import cli, run_family

pytestmark = pytest.mark.django_db(transaction=True)

DEMO_TASKS = {"xml-export", "smoke-tests", "crawler"}


def setup_demo() -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "setup_demo"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_setup_demo_defines_the_tasks_and_a_first_superuser_once():
    first = setup_demo().stdout
    assert {t.name for t in Task.objects.all()} == DEMO_TASKS
    for task in Task.objects.all():
        task.full_clean()
        assert task.argv[0] == sys.executable and Path(task.argv[1]).is_file()
    line = next(line for line in first.splitlines() if "Created superuser" in line)
    password = line.rsplit(" ", 1)[-1]
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.check_password(password)

    Task.objects.filter(name="crawler").update(title="changed", argv=["old"])
    second = setup_demo().stdout
    assert "superuser" not in second and password not in second
    assert "Updated task crawler." in second
    assert Task.objects.get(name="crawler").argv[0] == sys.executable
    assert Task.objects.count() == 3 and User.objects.count() == 1


def test_xml_export_keeps_its_feed_as_an_artifact(start_worker, tmp_path):
    store = tmp_path / "store"
    work = tmp_path / "work"
    start_worker(
        env={"TASKRUNNER_ARTIFACTS_ROOT": str(store), "TASKRUNNER_ARTIFACTS_WORK_DIR": str(work)}
    )
    call_command("setup_demo", stdout=io.StringIO())
    result = cli("start", "xml-export", "--param", "rows=3000", "--param", "region=us", "--follow")
    assert result.returncode == 0, result.stderr
    run = Run.objects.get(pk=int(result.stdout.splitlines()[0]))
    (artifact,) = Artifact.objects.filter(run=run)
    assert artifact.name == "feeds/catalogue-us.xml"
    assert artifact.content_type in {"application/xml", "text/xml"}
    path = store / "runs" / str(run.pk) / "feeds" / "catalogue-us.xml"
    assert run.result == {"artifact": artifact.name, "size_bytes": artifact.size, "rows": 3000}
    assert path.stat().st_size == artifact.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact.sha256
    products = ET.parse(path).getroot()  # noqa: S314 - our own file
    assert (products.get("region"), len(products)) == ("us", 3000)
    assert run.progress["fraction"] == 1.0
    assert not (work / str(run.pk)).exists()  # nothing left behind, no partial file kept
    assert "not kept" not in result.stdout + result.stderr


def test_xml_export_outside_the_task_runner_writes_to_its_directory(tmp_path):
    exports = tmp_path / "exports"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRUNNER_")}
    job = ROOT / "backoffice" / "jobs" / "xml_export.py"
    done = subprocess.run(
        [sys.executable, str(job), "--rows", "500", "--out-dir", str(exports)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.splitlines()[-1].removeprefix("::result "))
    path = Path(result["path"])
    assert path.parent == exports and result["size_bytes"] == path.stat().st_size
    assert list(exports.iterdir()) == [path]  # no partial file left behind


def test_smoke_tests_pass_against_the_running_site(start_worker):
    # DEBUG on, as under `make run`: with DEBUG off the manifest storage needs
    # `collectstatic`, which the test setup does not run (the smoke test
    # rightly fails then: the admin's pages answer 500).
    start_worker(env={"DEBUG": "true"})
    call_command("setup_demo", stdout=io.StringIO())
    result = cli("start", "smoke-tests", "--follow")
    assert result.returncode == 0, result.stdout + result.stderr
    run = Run.objects.get(pk=int(result.stdout.splitlines()[0]))
    assert run.result["failed"] == 0 and run.result["passed"] >= 10, run.result
    checks = [line for line in result.stdout.splitlines()[1:] if line.startswith("PASS ")]
    assert len(checks) == run.result["passed"]


def log_lines(run: Run, prefix: str) -> list[str]:
    events = [e for batch in store.iter_after(run.pk, 0, log_only=True) for e in batch]
    return [e.text for e in events if e.text.startswith(prefix)]


def test_crawler_answers_commands_pauses_its_fetcher_and_aborts_cleanly(worker):
    call_command("setup_demo", stdout=io.StringIO())
    Task.objects.filter(name="crawler").update(grace=3)
    run = Task.objects.get(name="crawler").start({"rate": 20, "depth": 3})
    run = wait_for(lambda: Run.objects.filter(pk=run.pk, pid__isnull=False).first(), timeout=20)
    wait_for(lambda: log_lines(run, "crawled "), timeout=20)
    family = wait_for(lambda: len(run_family(run)) >= 2 and run_family(run))

    run.request("input", data="status")
    run.request("input", data="faster")
    answer = wait_for(lambda: log_lines(run, "status: "))[0]
    fetcher_pid = family[1].pid
    assert f"fetcher_pid={fetcher_pid}" in answer
    message = wait_for(
        lambda: next(
            (e for b in store.iter_after(run.pk, 0) for e in b if e.kind == "message"), None
        )
    )
    assert message.data["name"] == "status" and message.data["data"]["fetcher_pid"] == fetcher_pid
    wait_for(lambda: log_lines(run, "ok: rate is now 40"))

    run.request("pause")
    wait_for(lambda: all_stopped(family), timeout=5)
    wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.PAUSED)
    run.request("abort")
    wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.ABORTED, timeout=15)
    wait_for(lambda: gone(family), timeout=10)
    assert not [p for p in psutil.process_iter() if p.pid in {m.pid for m in family}
                and p.status() != psutil.STATUS_ZOMBIE]  # fmt: skip
