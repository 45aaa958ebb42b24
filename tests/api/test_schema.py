"""GET /api/schema/: a valid OpenAPI 3.1 document, true to the routes and to real responses."""

import re

import httpx
import jsonschema
import pytest
from api_helpers import client
from openapi_spec_validator import validate
from populated import populate

pytestmark = pytest.mark.django_db(transaction=True)

CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


def routed_paths() -> set[str]:
    """Every route of taskrunner.api.urls as an OpenAPI path template, but the JSON 404."""
    from taskrunner.api import urls

    paths = set()
    for pattern in urls.urlpatterns:
        if pattern.name == "not-found":
            continue
        paths.add("/api/" + CONVERTER.sub(r"{\1}", str(pattern.pattern)))
    return paths


def test_every_route_is_described_and_every_described_path_is_routed():
    from taskrunner.api.schema import openapi_document

    described = set(openapi_document()["paths"])
    assert routed_paths() - described == set(), "routes missing from the schema"
    assert described - routed_paths() == set(), "schema paths nobody serves"


def test_every_method_a_view_allows_is_described():
    """The methods each view's @api_view declares are the operations of its path."""
    from django.urls import resolve

    from taskrunner.api.schema import openapi_document

    document = openapi_document()
    for path, item in document["paths"].items():
        concrete = path.replace("{name}", "x").replace("{run_id}", "1")
        concrete = concrete.replace("{schedule_id}", "1")
        view = resolve(concrete).func
        declared = _declared_methods(view)
        described = {m.upper() for m in item if m != "parameters"}
        assert declared == described, path


def _declared_methods(view) -> set[str]:
    """The methods a view answers, read from its @api_view closure."""
    from taskrunner.api import streams

    if view is streams.task_detail_or_stream:  # the JSON task or its newest run's stream
        return _declared_methods(streams.task_events) | _declared_methods(streams.task_detail)
    for cell in view.__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, dict) and value and all(k.isupper() for k in value):
            return set(value)
    raise AssertionError(f"no @api_view declaration on {view}")


def test_the_document_is_valid_openapi_3_1_and_staff_only(api, tokens):
    anonymous = httpx.get(f"{api.url}/api/schema/")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    with client(api.url, tokens["dave"]) as dave:  # not staff
        refused = dave.get("/api/schema/")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    with client(api.url, tokens["carol"]) as carol:  # staff, no permissions: may read
        response = carol.get("/api/schema/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises OpenAPIValidationError when the document is not OpenAPI 3.1
    assert set(document["components"]["securitySchemes"]) == {"bearer", "session"}
    assert document["paths"]["/api/runs/{run_id}/events/"]["get"]["responses"]["200"]["content"]
    errors = document["components"]["schemas"]["Error"]["properties"]["error"]
    assert {"invalid", "too_many", "unavailable"} <= set(errors["properties"]["code"]["enum"])


class Validator:
    """Checks a real response against the schema's description of its operation."""

    def __init__(self, document: dict):
        self.document = document

    def schema_for(self, path: str, method: str, status: int, content_type: str) -> dict | None:
        responses = self.document["paths"][path][method]["responses"]
        assert str(status) in responses, f"{method} {path}: {status} is not described"
        content = responses[str(status)].get("content")
        if content is None:
            return None
        media = content_type.split(";")[0].strip()
        assert media in content or "*/*" in content, f"{method} {path}: {media} not described"
        return (content.get(media) or content["*/*"])["schema"]

    def check(self, path: str, method: str, response: httpx.Response) -> None:
        schema = self.schema_for(
            path, method, response.status_code, response.headers.get("content-type", "")
        )
        if schema is None or not response.headers["content-type"].startswith("application/json"):
            return
        jsonschema.validate(
            response.json(),
            {**schema, "components": self.document["components"]},
            cls=jsonschema.Draft202012Validator,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )


@pytest.fixture
def populated(start_server, start_worker, make_task, tokens, tmp_path):
    data = populate(start_server, start_worker, make_task, tokens, tmp_path)
    yield data
    data.http.close()


def test_real_responses_validate_against_the_schema(populated):
    http = populated.http
    validator = Validator(http.get("/api/schema/").json())
    run = populated.running
    kept = f"/api/runs/{populated.with_artifacts}/artifacts/"
    gets = {
        "/api/": "/api/",
        "/api/schema/": "/api/schema/",
        "/api/tasks/": "/api/tasks/",
        "/api/tasks/{name}/": "/api/tasks/report/",
        "/api/schedules/": "/api/schedules/?task=report",
        "/api/schedules/{schedule_id}/": f"/api/schedules/{populated.schedule}/",
        "/api/runs/": "/api/runs/?limit=2",
        "/api/runs/{run_id}/": f"/api/runs/{populated.finished}/",
        "/api/runs/{run_id}/event-list/": f"/api/runs/{populated.finished}/event-list/",
        "/api/runs/{run_id}/log/": f"/api/runs/{populated.finished}/log/",
        "/api/runs/{run_id}/artifacts/": kept,
        "/api/runs/{run_id}/artifacts/{name}": kept + "report.txt",
        "/api/debug/hub/": "/api/debug/hub/",
    }
    for path, url in gets.items():
        response = http.get(url)
        assert response.status_code == 200, (url, response.text)
        validator.check(path, "get", response)
    runs = http.get("/api/runs/?limit=1").json()
    assert runs["next"] is not None  # the paging shape was exercised too

    # Every resource in its richest form: progress, result, artifacts, schedules.
    for run_id in (populated.finished, populated.with_artifacts, populated.failed, run):
        validator.check("/api/runs/{run_id}/", "get", http.get(f"/api/runs/{run_id}/"))

    # Errors, each in the shape and status the schema gives.
    errors = [
        ("/api/runs/{run_id}/", "get", http.get("/api/runs/999999/"), 404),
        ("/api/runs/", "get", http.get("/api/runs/?limit=0"), 400),
        ("/api/runs/", "get", http.get("/api/runs/?status=bogus"), 400),
        (
            "/api/tasks/{name}/runs/",
            "post",
            http.post("/api/tasks/report/runs/", content=b"{"),
            400,
        ),
        (
            "/api/tasks/{name}/runs/",
            "post",
            http.post("/api/tasks/report/runs/", json={"params": {"limit": "x"}}),
            400,
        ),
        (
            "/api/runs/{run_id}/resume/",
            "post",
            http.post(f"/api/runs/{run}/resume/", json={}),
            409,
        ),
        ("/api/runs/{run_id}/input/", "post", http.post(f"/api/runs/{run}/input/", json={}), 400),
        (
            "/api/runs/{run_id}/events/",
            "get",
            http.get(f"/api/runs/{populated.finished}/events/?after=99999"),
            204,
        ),
        (
            "/api/tasks/{name}/schedules/",
            "post",
            http.post("/api/tasks/report/schedules/", json={"every": 0}),
            400,
        ),
        (
            "/api/runs/{run_id}/artifacts/{name}",
            "get",
            http.get(f"/api/runs/{populated.with_artifacts}/artifacts/nope"),
            404,
        ),
    ]
    for path, method, response, status in errors:
        assert response.status_code == status, (path, response.text)
        validator.check(path, method, response)

    # Writes: start, control, input, schedule changes, task shorthand.
    started = http.post("/api/tasks/report/runs/", json={"params": {"region": "eu"}})
    assert started.status_code == 202
    validator.check("/api/tasks/{name}/runs/", "post", started)
    paused = http.post(f"/api/runs/{run}/pause/", json={})
    assert paused.status_code == 202
    validator.check("/api/runs/{run_id}/pause/", "post", paused)
    sent = http.post(f"/api/runs/{run}/input/", json={"data": "hello"})
    validator.check("/api/runs/{run_id}/input/", "post", sent)
    changed = http.patch(f"/api/schedules/{populated.schedule}/", json={"enabled": False})
    assert changed.status_code == 200
    validator.check("/api/schedules/{schedule_id}/", "patch", changed)
    shorthand = http.post("/api/tasks/endless/", json={"action": "abort"})
    assert shorthand.status_code == 202, shorthand.text
    validator.check("/api/tasks/{name}/", "post", shorthand)
    removed = http.delete(f"/api/schedules/{populated.schedule}/")
    assert removed.status_code == 204
    wrong = http.put("/api/runs/1/")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_the_validator_catches_a_response_the_schema_does_not_describe(populated):
    """The check above can fail: a Run without its status is refused."""
    http = populated.http
    validator = Validator(http.get("/api/schema/").json())
    response = http.get(f"/api/runs/{populated.finished}/")
    broken = response.json()
    del broken["status"]
    fake = httpx.Response(200, json=broken, headers={"content-type": "application/json"})
    with pytest.raises(jsonschema.ValidationError):
        validator.check("/api/runs/{run_id}/", "get", fake)
    with pytest.raises(AssertionError):
        validator.check("/api/runs/{run_id}/", "get", httpx.Response(418, json={}))


def test_a_path_with_an_encoded_newline_is_a_json_404(api, tokens):
    """Found by Schemathesis: `.` in the catch-all route did not match a newline."""
    with client(api.url, tokens["alice"]) as alice:
        response = alice.post("/api/runs/%0A/abort/", json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
