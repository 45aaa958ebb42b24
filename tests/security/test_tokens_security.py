"""A bearer token is for the API only (finding 3), against a real uvicorn.

The reviewer opened `/admin/` with a superuser's token and changed a task's
argv with no CSRF token. Now the header is ignored outside `/api/`: the
request is anonymous and sent to the login page, and the task is unchanged.
"""

import httpx
import pytest

from taskrunner.models import ApiToken, Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def superuser_token(personas) -> str:
    return ApiToken.create_for(personas["alice"])[1]


def test_a_token_opens_no_page_and_changes_nothing_in_the_admin(server, superuser_token):
    task = Task.objects.create(name="export", argv=["echo", "safe"])
    headers = {"Authorization": f"Bearer {superuser_token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        for path in [
            "/",
            "/admin/",
            f"/tasks/{task.name}/",
            f"/admin/taskrunner/task/{task.pk}/change/",
        ]:
            response = client.get(path)
            assert response.status_code == 302, path
            assert response.headers["location"].startswith("/admin/login/"), path

        attack = client.post(
            f"/admin/taskrunner/task/{task.pk}/change/",
            data={"name": "export", "argv": '["sh", "-c", "id"]', "grace": "10",
                  "max_concurrent": "1", "_save": "Save"},
        )  # fmt: skip
        assert attack.status_code in (302, 403)
        if attack.status_code == 302:
            assert attack.headers["location"].startswith("/admin/login/")
        task.refresh_from_db()
        assert task.argv == ["echo", "safe"]

        # The same token still works where it is meant to.
        api = client.get("/api/tasks/export/")
        assert api.status_code == 200 and api.json()["name"] == "export"
    with httpx.Client(base_url=server.url, timeout=10) as anonymous:
        assert anonymous.get("/api/tasks/").status_code == 401
