"""The demo Django task: the dashboard's button enqueues it; a worker runs it to its summary."""

import pytest

from tests.conftest import wait_for


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_the_dashboard_button_enqueues_the_report_through_django(personas, client):
    from django.test import Client

    from taskrunner.models import Run

    client.force_login(personas["bob"])
    page = client.get("/")
    assert b"Enqueue the sales report" in page.content
    response = client.post("/reports/sales/enqueue/")
    run = Run.objects.select_related("task").get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert run.task.name == "django-backoffice-tasks-sales_report"
    assert run.params == {"args": [], "kwargs": {}}
    assert run.actions.get().via == "django"

    client.force_login(personas["carol"])  # staff, but may not start runs
    assert b"Enqueue the sales report" not in client.get("/").content
    assert client.post("/reports/sales/enqueue/").status_code == 403
    assert client.get("/reports/sales/enqueue/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(personas["bob"])
    assert strict.post("/reports/sales/enqueue/").status_code == 403  # no CSRF token
    assert Run.objects.count() == 1


def test_the_report_runs_to_its_summary(worker):
    from backoffice.tasks import sales_report
    from taskrunner.models import Run

    result = sales_report.enqueue(days=3, seconds_per_day=0.01)
    wait_for(lambda: Run.objects.get(pk=int(result.id)).is_final, 30)
    result.refresh()
    assert result.status == "SUCCESSFUL"
    assert result.return_value["days"] == 3
    assert set(result.return_value["by_region"]) >= {"north", "south"}
    run = Run.objects.get(pk=int(result.id))
    assert run.progress["current"] == 3 and run.progress["total"] == 3
