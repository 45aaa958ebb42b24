"""Who may call what: every endpoint against every kind of caller, over real HTTP."""

import httpx
import pytest
from api_helpers import bearer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(make_task, personas):
    """A finished run (controls answer 409, reads end at once) and an idle task."""
    from taskrunner.models import RunStatus

    task = make_task("demo")
    make_task("idle")
    done = task.start({}, user=personas["alice"])
    done.finish(RunStatus.SUCCEEDED, exit_code=0)
    return {"done": done.pk, "last_seq": done.last_seq + 1}


def endpoints(world):
    run = world["done"]
    after = {"after": world["last_seq"]}
    # (method, path, json body, query, needs a permission beyond staff)
    return [
        ("GET", "/api/", None, None, False),
        ("GET", "/api/tasks/", None, None, False),
        ("GET", "/api/tasks/demo/", None, None, False),
        ("POST", "/api/tasks/demo/", {"action": "start"}, None, True),
        ("POST", "/api/tasks/idle/", {"action": "pause"}, None, True),
        ("DELETE", "/api/tasks/idle/", None, None, True),
        ("POST", "/api/tasks/demo/runs/", {}, None, True),
        ("GET", "/api/runs/", None, None, False),
        ("GET", f"/api/runs/{run}/", None, None, False),
        ("DELETE", f"/api/runs/{run}/", None, None, True),
        ("POST", f"/api/runs/{run}/pause/", None, None, True),
        ("POST", f"/api/runs/{run}/resume/", None, None, True),
        ("POST", f"/api/runs/{run}/abort/", None, None, True),
        ("POST", f"/api/runs/{run}/input/", {"data": "x"}, None, True),
        ("GET", f"/api/runs/{run}/events/", None, None, False),
        ("GET", f"/api/runs/{run}/events/", None, after, False),
        ("GET", f"/api/runs/{run}/event-list/", None, None, False),
        ("GET", f"/api/runs/{run}/log/", None, None, False),
        ("GET", "/api/events/", None, None, False),
        ("GET", "/api/debug/hub/", None, None, False),
    ]


def call(http: httpx.Client, method, path, body, query, headers=None) -> httpx.Response:
    """One request; an endless stream is cut after its headers."""
    with http.stream(method, path, json=body, params=query, headers=headers or {}) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            if path != "/api/events/":
                response.read()
            return response
        response.read()
        return response


def error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def test_every_endpoint_answers_each_kind_of_caller(api, tokens, session_cookies, world):
    problems = []

    def expect(who, method, path, response, ok):
        if not ok(response):
            problems.append(
                f"{who}: {method} {path} -> {response.status_code} {response.text[:200]}"
            )

    def refused(status, code):
        return lambda r: r.status_code == status and error_code(r) == code

    def allowed(r):
        return r.status_code < 400 or r.status_code == 409

    with httpx.Client(base_url=api.url, timeout=20) as http:
        for method, path, body, query, needs_perm in endpoints(world):
            args = (http, method, path, body, query)
            expect("anonymous", method, path, call(*args), refused(401, "unauthenticated"))
            bad = call(*args, headers=bearer("trt_not-a-real-token"))
            expect("bad token", method, path, bad, refused(401, "unauthenticated"))
            dave = call(*args, headers=bearer(tokens["dave"]))
            expect("non-staff", method, path, dave, refused(403, "forbidden"))
            carol = call(*args, headers=bearer(tokens["carol"]))
            staff_ok = refused(403, "forbidden") if needs_perm else allowed
            expect("staff", method, path, carol, staff_ok)
            for who in ("bob", "alice"):
                response = call(*args, headers=bearer(tokens[who]))
                expect(f"{who} token", method, path, response, allowed)
            session = session_cookies["bob"]
            http.cookies.set("sessionid", session["sessionid"])
            http.cookies.set("csrftoken", session["csrftoken"])
            try:
                no_csrf = call(*args)
                if method == "GET":
                    expect("session", method, path, no_csrf, allowed)
                else:
                    expect("session without CSRF", method, path, no_csrf, refused(403, "forbidden"))
                    with_csrf = call(*args, headers={"X-CSRFToken": session["csrftoken"]})
                    expect("session with CSRF", method, path, with_csrf, allowed)
            finally:
                http.cookies.clear()
            dave_session = session_cookies["dave"]
            http.cookies.set("sessionid", dave_session["sessionid"])
            try:
                expect("non-staff session", method, path, call(*args), refused(403, "forbidden"))
            finally:
                http.cookies.clear()
    assert not problems, "\n".join(problems)


def test_revoked_token_is_refused(api, tokens, personas):
    from django.utils import timezone

    from taskrunner.models import ApiToken

    with httpx.Client(base_url=api.url, headers=bearer(tokens["bob"])) as http:
        assert http.get("/api/tasks/").status_code == 200
        ApiToken.objects.filter(user=personas["bob"]).update(revoked_at=timezone.now())
        response = http.get("/api/tasks/")
        assert response.status_code == 401
        assert error_code(response) == "unauthenticated"


def test_pages_still_send_html_csrf_failures_and_api_unknown_paths_are_json(api, session_cookies):
    with httpx.Client(base_url=api.url, cookies=session_cookies["bob"]) as http:
        page = http.post("/admin/logout/")
        assert page.status_code == 403
        assert page.headers["content-type"].startswith("text/html")
        missing = http.get("/api/no/such/thing/")
        assert missing.status_code == 404
        assert error_code(missing) == "not_found"


def test_a_big_form_body_from_a_browser_session_is_still_the_apis_413(api, session_cookies):
    cookies = session_cookies["bob"]
    with httpx.Client(base_url=api.url, cookies=cookies, timeout=20) as http:
        response = http.post(
            "/api/tasks/demo/runs/",
            content=b"a=" + b"x" * (3 * 1024 * 1024),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-CSRFToken": cookies["csrftoken"],
            },
        )
        assert response.status_code == 413
        assert error_code(response) == "too_large"
