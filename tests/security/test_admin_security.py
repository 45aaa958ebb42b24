"""The admin, attacked as a staff user would (issue 15, findings 1, 4, 7, 8, 9).

Every request goes through Django's test client to the real admin views
(forms, CSRF middleware and all); runs that must be active are real children
of a real worker.
"""

import hashlib
import subprocess
import sys

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from taskrunner.models import (
    ActiveRunDeletion,
    ApiToken,
    Run,
    RunStatus,
    Task,
    Worker,
)
from tests.conftest import ROOT, child_script, stored_events, subprocess_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_VALUE = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def grant(user, *codenames: str):
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def logged_in(user) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


@pytest.fixture
def git_task(transactional_db):
    """The reviewer's target: `git fetch {remote}` with remote limited to choices."""
    task = Task(
        name="fetch-mirror",
        title="Fetch the mirror",
        argv=["git", "-C", "/srv/mirror", "fetch", "{remote}"],
        cwd="/srv",
        env={"API_KEY": SECRET_VALUE},
        params=[{"name": "remote", "type": "str", "default": "origin", "choices": ["origin"]}],
    )
    task.full_clean()
    task.save()
    return task


def change_form(task: Task, **overrides) -> dict:
    """Every field of the admin's task form, as a browser would post it."""
    data = {
        "name": task.name,
        "title": task.title,
        "description": task.description,
        "argv": '["git", "-C", "/srv/mirror", "fetch", "{remote}"]',
        "cwd": task.cwd,
        "env": '{"API_KEY": "x"}',
        "pass_env": "[]",
        "params": '[{"name": "remote", "type": "str", "default": "origin"}]',
        "timeout": "",
        "grace": "10",
        "max_concurrent": "1",
        "enabled": "on",
        "created_at_0": "2026-11-30",
        "created_at_1": "08:00:00",
        "retries": "0",
        "retry_delay": "10",
        "keep_days": "",
        "keep_runs": "",
        # The schedules inline (shown to users with the schedule permissions).
        "schedules-TOTAL_FORMS": "0",
        "schedules-INITIAL_FORMS": "0",
        "_save": "Save",
    }
    data.update(overrides)
    return data


# --- finding 1: what a child executes is for superusers only -------------------


def test_a_task_editor_cannot_change_what_a_task_executes(personas, git_task):
    editor = grant(personas["bob"], "change_task", "view_task", "add_task")
    client = logged_in(editor)
    url = f"/admin/taskrunner/task/{git_task.pk}/change/"

    page = client.get(url)
    assert page.status_code == 200
    form_fields = set(page.context["adminform"].form.fields)
    assert not form_fields & {"name", "argv", "cwd", "env", "pass_env", "params"}, form_fields
    assert "title" in form_fields  # the rest stays editable

    # The attack: drop the choices, change the command, rename the task.
    attack = change_form(
        git_task,
        name="deploy",
        title="Edited by bob",
        argv='["sh", "-c", "id > /tmp/pwned"]',
        cwd="/",
        env='{"LD_PRELOAD": "/tmp/evil.so"}',
        pass_env='["SECRET_KEY", "DATABASE_URL"]',
        params='[{"name": "remote", "type": "str", "default": "origin", "allow_dash": true}]',
    )
    response = client.post(url, attack)
    assert response.status_code == 302, response.content[:2000]
    stored = Task.objects.get(pk=git_task.pk)
    assert stored.title == "Edited by bob"  # the POST itself went through
    assert stored.name == "fetch-mirror"
    assert stored.argv == ["git", "-C", "/srv/mirror", "fetch", "{remote}"]
    assert stored.cwd == "/srv"
    assert stored.env == {"API_KEY": SECRET_VALUE}
    assert stored.pass_env == []
    assert stored.params == git_task.params
    assert stored.params[0]["choices"] == ["origin"]

    # Nor can a task editor create a task: a new task is all command.
    assert client.get("/admin/taskrunner/task/add/").status_code == 403
    created = client.post("/admin/taskrunner/task/add/", change_form(git_task, name="evil"))
    assert created.status_code == 403
    assert not Task.objects.filter(name="evil").exists()


def test_a_superuser_still_changes_what_a_task_executes(personas, git_task):
    client = logged_in(personas["alice"])
    url = f"/admin/taskrunner/task/{git_task.pk}/change/"
    response = client.post(url, change_form(git_task, argv='["git", "fetch", "--", "{remote}"]'))
    assert response.status_code == 302, response.content[:2000]
    assert Task.objects.get(pk=git_task.pk).argv == ["git", "fetch", "--", "{remote}"]


# --- finding 4: environment values masked but for superusers -------------------


def test_env_values_are_masked_for_everyone_but_superusers(personas, git_task):
    viewer = grant(personas["carol"], "view_task")
    editor = grant(personas["bob"], "view_task", "change_task")
    change_url = f"/admin/taskrunner/task/{git_task.pk}/change/"
    pages = [change_url, f"/tasks/{git_task.name}/", f"/api/tasks/{git_task.name}/", "/api/tasks/"]
    for user in (viewer, editor):
        client = logged_in(user)
        for url in pages:
            response = client.get(url)
            assert response.status_code == 200, (user, url)
            assert SECRET_VALUE not in response.content.decode(), (user.username, url)
        admin_page = client.get(change_url).content.decode()
        assert "API_KEY=•••" in admin_page  # the name shows, the value does not
    superuser_page = logged_in(personas["alice"]).get(change_url).content.decode()
    assert SECRET_VALUE in superuser_page


# --- finding 7: active runs cannot be deleted -----------------------------------


def test_active_runs_cannot_be_deleted_in_the_admin(personas, worker):
    task = Task.objects.create(
        name="numbered",
        argv=[*child_script("numbered"), "--count", "100000", "--interval", "0.01"],
        grace=2,
    )
    finished = task.start({})
    Run.objects.filter(pk=finished.pk).update(status=RunStatus.SUCCEEDED)
    running = task.start({})
    wait_for(lambda: len(stored_events(running.pk, "log")) >= 20, timeout=30)
    client = logged_in(personas["alice"])  # even a superuser

    one = client.post(f"/admin/taskrunner/run/{running.pk}/delete/", {"post": "yes"})
    assert one.status_code == 403
    bulk = client.post(
        "/admin/taskrunner/run/",
        {"action": "delete_selected", "_selected_action": [running.pk, finished.pk], "post": "yes"},
        follow=True,
    )
    assert bulk.status_code == 200
    assert "active runs cannot be deleted" in bulk.content.decode()
    with pytest.raises(ActiveRunDeletion):
        Run.objects.get(pk=running.pk).delete()
    with pytest.raises(ActiveRunDeletion):
        Run.objects.filter(task=task).delete()
    assert Run.objects.filter(pk__in=[running.pk, finished.pk]).count() == 2

    # The run goes on and can still be aborted; nothing recorded is lost.
    running.request("abort")
    wait_for(lambda: Run.objects.get(pk=running.pk).status == RunStatus.ABORTED, timeout=20)
    run = Run.objects.get(pk=running.pk)
    events = stored_events(run.pk)
    assert [e.seq for e in events] == list(range(1, run.last_seq + 1))
    lines = [e.text for e in events if e.kind == "log" and e.stream == "stdout"]
    assert lines == [f"line {n}" for n in range(1, len(lines) + 1)]

    # Once final, the same bulk action deletes it.
    client.post(
        "/admin/taskrunner/run/",
        {"action": "delete_selected", "_selected_action": [run.pk, finished.pk], "post": "yes"},
    )
    assert not Run.objects.filter(pk__in=[run.pk, finished.pk]).exists()


# --- finding 8: worker rows are read-only ---------------------------------------


def test_worker_rows_are_read_only_in_the_admin(personas):
    row = Worker.objects.create(hostname="here", pid=4321, create_time=1000.0)
    client = logged_in(personas["alice"])
    url = f"/admin/taskrunner/worker/{row.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200  # viewable
    assert not page.context["adminform"].form.fields
    changed = client.post(url, {"hostname": "here", "pid": "4321", "create_time": "1.0"})
    assert changed.status_code == 403
    assert (
        client.post(f"/admin/taskrunner/worker/{row.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    bulk = client.post(
        "/admin/taskrunner/worker/",
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert client.get("/admin/taskrunner/worker/add/").status_code == 403
    row.refresh_from_db()
    assert (row.create_time, row.pid) == (1000.0, 4321)


# --- finding 9: revocation is final; tokens stored as SHA-256 ------------------


def test_a_revoked_token_cannot_be_unrevoked(personas):
    manager = grant(personas["bob"], "view_apitoken", "change_apitoken")
    token, secret = ApiToken.create_for(personas["carol"])
    client = logged_in(manager)
    bearer = Client()
    assert bearer.get("/api/tasks/", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200

    client.post(
        "/admin/taskrunner/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
    )
    token.refresh_from_db()
    revoked_at = token.revoked_at
    assert revoked_at is not None
    assert bearer.get("/api/tasks/", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401

    url = f"/admin/taskrunner/apitoken/{token.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    assert "revoked_at" not in page.context["adminform"].form.fields
    client.post(url, {"revoked_at_0": "", "revoked_at_1": "", "_save": "Save"})
    superuser = logged_in(personas["alice"])
    superuser.post(url, {"revoked_at_0": "", "revoked_at_1": "", "_save": "Save"})
    token.refresh_from_db()
    assert token.revoked_at == revoked_at
    assert bearer.get("/api/tasks/", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401


def test_the_database_stores_only_the_sha256_of_a_token(personas):
    result = subprocess.run(
        [sys.executable, "manage.py", "taskrunner", "token", "create", "bob"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip().splitlines()[-1]
    row = ApiToken.objects.get(user=personas["bob"])
    assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = [str(v) for v in ApiToken.objects.filter(pk=row.pk).values().get().values()]
    assert not any(secret in value for value in stored), stored
    assert secret.startswith(row.prefix) and len(row.prefix) < len(secret) // 3
