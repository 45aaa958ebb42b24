"""The page views without a browser: access, forms, permissions, escaping, CSP."""

import pytest
from django.test import Client
from django.urls import reverse

from taskrunner.models import Run, Task
from tests.conftest import PASSWORD


@pytest.fixture
def task(transactional_db):
    return Task.objects.create(
        name="export",
        title="Export <b>all</b>",
        description="Writes <script>alert(1)</script> nothing.",
        argv=["true"],
        params=[
            {"name": "rows", "type": "int", "default": 10, "required": False, "choices": None},
            {
                "name": "verbose",
                "type": "bool",
                "default": False,
                "required": False,
                "choices": None,
            },
        ],
    )


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


PAGES = ["/", "/timeline/", "/tasks/export/", "/runs/{run}/"]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_and_non_staff_are_sent_to_the_login(personas, task, path):
    run = task.start({})
    url = path.format(run=run.pk)
    for user in (None, personas["dave"]):
        response = client_for(user).get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login") + "?next=")


@pytest.mark.parametrize("path", PAGES)
def test_staff_see_every_page_with_a_strict_csp(personas, task, path):
    run = task.start({})
    response = client_for(personas["carol"]).get(path.format(run=run.pk))
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "<b>all</b>" not in html
    # No inline script: every <script> has a src.
    assert html.count("<script") == html.count("<script src=") + html.count(
        '<script type="module" src='
    )


def test_buttons_follow_permissions(personas, task):
    run = task.start({})
    carol = client_for(personas["carol"]).get("/").content.decode()
    assert 'data-start="export"' not in carol
    assert 'data-control="pause"' not in carol
    bob = client_for(personas["bob"]).get("/").content.decode()
    assert 'data-start="export"' in bob
    assert 'data-control="abort"' in bob
    page = client_for(personas["bob"]).get(f"/runs/{run.pk}/").content.decode()
    assert "data-input-form" in page
    alice = client_for(personas["alice"]).get("/tasks/export/").content.decode()
    assert reverse("admin:taskrunner_task_change", args=[task.pk]) in alice
    bob_task = client_for(personas["bob"]).get("/tasks/export/").content.decode()
    assert reverse("admin:taskrunner_task_change", args=[task.pk]) not in bob_task


def test_start_needs_the_permission(personas, task):
    response = client_for(personas["carol"]).post("/tasks/export/start/", {"rows": "5"})
    assert response.status_code == 403
    assert not Run.objects.exists()


def test_start_from_a_form_queues_a_run_and_shows_it(personas, task):
    response = client_for(personas["bob"]).post(
        "/tasks/export/start/", {"rows": "5", "verbose": "true"}
    )
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.pk}/"
    assert run.params == {"rows": 5, "verbose": True}
    action = run.actions.get()
    assert (action.action, action.by, action.via) == ("start", "bob", "page")


def test_bad_parameters_are_refused_with_a_message(personas, task):
    client = client_for(personas["bob"])
    response = client.post("/tasks/export/start/", {"rows": "many"}, follow=True)
    assert not Run.objects.exists()
    assert "rows: must be an integer" in response.content.decode()
    json_response = client.post(
        "/tasks/export/start/", {"rows": "many"}, headers={"Accept": "application/json"}
    )
    assert json_response.status_code == 400
    assert "rows" in json_response.json()["error"]["message"]


def test_unticked_checkbox_means_false(personas, task):
    client_for(personas["bob"]).post("/tasks/export/start/", {"rows": "1"})
    assert Run.objects.get().params["verbose"] is False


def test_control_needs_the_permission_and_a_state_that_allows_it(personas, task):
    run = task.start({})
    carol = client_for(personas["carol"])
    assert carol.post(f"/runs/{run.pk}/abort/").status_code == 403
    bob = client_for(personas["bob"])
    # A queued run cannot be paused: 409 for scripts, a message for people.
    conflict = bob.post(f"/runs/{run.pk}/pause/", headers={"Accept": "application/json"})
    assert conflict.status_code == 409
    page = bob.post(f"/runs/{run.pk}/pause/", follow=True)
    assert "cannot pause" in page.content.decode()
    assert bob.post(f"/runs/{run.pk}/frobnicate/").status_code == 404
    # Aborting a queued run finalises it at once.
    response = bob.post(f"/runs/{run.pk}/abort/", {"next": "/"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    run.refresh_from_db()
    assert run.status == "aborted"
    assert run.actions.filter(action="abort", by="bob", via="page").exists()


def test_next_must_stay_on_the_site(personas, task):
    run = task.start({})
    response = client_for(personas["bob"]).post(
        f"/runs/{run.pk}/abort/", {"next": "https://evil.example/"}
    )
    assert response["Location"] == f"/runs/{run.pk}/"


def test_input_is_one_line(personas, task):
    run = task.start({})
    bob = client_for(personas["bob"])
    refused = bob.post(
        f"/runs/{run.pk}/input/", {"data": "a\nb"}, headers={"Accept": "application/json"}
    )
    assert refused.status_code == 400
    # Queued: no process to read it yet.
    queued = bob.post(
        f"/runs/{run.pk}/input/", {"data": "status"}, headers={"Accept": "application/json"}
    )
    assert queued.status_code == 409


def test_pages_need_post_for_changes(personas, task):
    bob = client_for(personas["bob"])
    assert bob.get("/tasks/export/start/").status_code == 405
    run = task.start({})
    assert bob.get(f"/runs/{run.pk}/abort/").status_code == 405


def test_history_is_filtered_and_paginated(personas, task):
    for _ in range(30):
        task.start({})
    Run.objects.filter(pk__in=list(Run.objects.values_list("pk", flat=True)[:3])).update(
        status="failed"
    )
    client = client_for(personas["carol"])
    failed = client.get("/tasks/export/?status=failed").content.decode()
    assert failed.count("tr-status--failed") == 3
    first = client.get("/tasks/export/").content.decode()
    assert "Page 1 of 2" in first
    assert "Page 2 of 2" in client.get("/tasks/export/?page=2").content.decode()
    # Unknown filters are ignored, not errors.
    assert client.get("/tasks/export/?status=nope&page=x").status_code == 200


def test_unknown_things_are_404(personas):
    client = client_for(personas["carol"])
    assert client.get("/tasks/nope/").status_code == 404
    assert client.get("/runs/999/").status_code == 404
    assert client.post("/tasks/nope/start/").status_code == 404


def test_login_page_is_the_admin_one(personas):
    client = Client()
    response = client.post(
        reverse("admin:login") + "?next=/",
        {"username": "carol", "password": PASSWORD, "next": "/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_the_admin_wears_the_site_branding(personas):
    response = client_for(personas["alice"]).get(reverse("admin:index"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Back office" in html
    assert 'href="/timeline/"' in html
