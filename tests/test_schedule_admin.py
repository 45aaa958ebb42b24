"""Schedules inline in the task's admin page, with their own permissions."""

from datetime import datetime

import pytest
from django.test import Client
from django.utils import timezone

from taskrunner.models import Schedule, Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def form_data(response) -> dict:
    """The change form's current values as a browser would post them."""
    data = {}
    form = response.context["adminform"].form
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if hasattr(field, "prepare_value"):
            value = field.prepare_value(value)
        if isinstance(value, datetime):  # the admin's split date and time inputs
            local = timezone.localtime(value)
            data[f"{name}_0"], data[f"{name}_1"] = f"{local:%Y-%m-%d}", f"{local:%H:%M:%S}"
            continue
        if isinstance(value, bool):
            if value:
                data[name] = "on"
            continue
        data[name] = "" if value is None else value
    for formset in response.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management.initial.get(name, 0)
    return data


def test_a_superuser_adds_a_schedule_inline(personas):
    task = Task.objects.create(name="nightly", argv=["true"])
    client = Client()
    client.force_login(personas["alice"])
    url = f"/admin/taskrunner/task/{task.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200 and b"schedules-TOTAL_FORMS" in page.content
    data = form_data(page)
    data.update(
        {
            "schedules-TOTAL_FORMS": "1",
            "schedules-0-cron": "61 * * * *",
            "schedules-0-every": "",
            "schedules-0-timezone": "",
            "schedules-0-params": "{}",
            "schedules-0-overlap": "skip",
            "schedules-0-enabled": "on",
        }
    )
    bad = client.post(url, data)
    assert bad.status_code == 200 and b"Bad minute" in bad.content
    assert not Schedule.objects.exists()
    data["schedules-0-cron"] = "@hourly"
    good = client.post(url, data)
    errors = good.context and [good.context["adminform"].form.errors] + [
        f.formset.errors for f in good.context["inline_admin_formsets"]
    ]
    assert good.status_code == 302, errors
    schedule = Schedule.objects.get()
    assert schedule.cron == "0 * * * *" and schedule.next_run_at is not None
