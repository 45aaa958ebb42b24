"""GET /api/schema/: the API's OpenAPI 3.1 description (shared/API.md, "The API describes itself").

Kept by hand beside the views it describes, and held to them by the tests
(tests/api/test_schema.py): every route of `taskrunner.api.urls` is a path here
and every path here is routed, the document is valid OpenAPI 3.1, real
responses validate against it, and Schemathesis (tests/api/test_fuzz.py)
sends requests generated from it to a live server. A view that changes what
it answers without a change here fails those tests.
"""

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from taskrunner.api.access import api_view
from taskrunner.api.errors import STATUS_OF_CODE
from taskrunner.models import RunStatus

MAX_ID = 2**63 - 1

# --- small builders ------------------------------------------------------------


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Any], *, required: list[str] | None = None, **extra: Any) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        **extra,
    }


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
TIME = {"type": "string", "format": "date-time"}
ID = {"type": "integer", "minimum": 1}
URL = {"type": "string"}
ANY: dict[str, Any] = {}
STATUSES = list(RunStatus.values)


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(ref("Error"))}


# Every answer an operation may give besides its success: the error shape with
# the code the contract names. 401/403/503 can answer any request.
ERRORS = {
    "400": error("`invalid`: malformed JSON, an unknown or invalid field (named in `fields`)."),
    "401": error("`unauthenticated`: no session and no valid bearer token."),
    "403": error("`forbidden`: not staff, a missing permission, or a failed CSRF check."),
    "404": error("`not_found`: no such task, run, schedule or artifact."),
    "405": error("`method_not_allowed`: the `Allow` header lists the methods."),
    "409": error("`conflict`: the run's state does not allow the action."),
    "413": error("`too_large`: a body over 1 MiB."),
    "429": error("`too_many`: too many open streams for this user or process."),
    "503": error("`unavailable`: the database is away; retry later."),
}


def errors(*codes: str) -> dict[str, Any]:
    wanted = {"401", "403", "503", *codes}
    return {code: ERRORS[code] for code in sorted(wanted)}


def path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


# The contract writes `?task=&status=&limit=&before=`: an empty value is the same as
# none (as an HTML form sends it), so every query parameter also takes "".
EMPTY = {"type": "string", "maxLength": 0}


def query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    if schema.get("type") != "string":
        schema = {"anyOf": [schema, EMPTY]}
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


TASK_NAME = path_param(
    "name", {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"}, "The task's name (a slug)."
)
RUN_ID = path_param("run_id", {"type": "integer", "minimum": 0}, "The run's id.")
SCHEDULE_ID = path_param("schedule_id", {"type": "integer", "minimum": 0}, "The schedule's id.")


def body(schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema)}


def answer(description: str, schema: dict[str, Any], **headers: str) -> dict[str, Any]:
    result: dict[str, Any] = {"description": description, "content": json_content(schema)}
    if headers:
        result["headers"] = {
            name: {"description": text, "schema": STRING} for name, text in headers.items()
        }
    return result


def operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op_id = extra.pop("operation_id")
    return {"operationId": op_id, "summary": summary, "responses": responses, **extra}


# --- resources -------------------------------------------------------------------

ERROR_CODES = sorted(code for code in STATUS_OF_CODE if code not in ("internal", "asgi_required"))

PROGRESS = obj(
    {
        "current": nullable({"type": "number"}),
        "total": nullable({"type": "number"}),
        "fraction": nullable({"type": "number"}),
        "message": nullable(STRING),
    },
    required=[],
)

ACTION = obj(
    {
        "action": {"type": "string", "enum": ["start", "pause", "resume", "abort", "input"]},
        "by": nullable(STRING),
        "via": {
            "type": "string",
            "enum": ["page", "api", "cli", "worker", "schedule", "retry", "django"],
        },
        "at": TIME,
    }
)

ARTIFACT = obj(
    {
        "name": STRING,
        "size": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "content_type": STRING,
        "created_at": TIME,
        "url": URL,
    }
)

RUN = obj(
    {
        "id": ID,
        "task": STRING,
        "status": {"type": "string", "enum": STATUSES},
        "params": {"type": "object"},
        "attempt": {"type": "integer", "minimum": 1},
        "priority": {
            **INTEGER,
            "description": "Queued runs are claimed highest first, then oldest; 0 unless a "
            "Django task's `priority` (-100 to 100) set it.",
        },
        "progress": nullable(ref("Progress")),
        "result": ANY,
        "error": nullable(STRING),
        "exit_code": nullable(INTEGER),
        "created_at": TIME,
        "started_at": nullable(TIME),
        "finished_at": nullable(TIME),
        "requested_by": nullable(STRING),
        "host": nullable(STRING),
        "pid": nullable(INTEGER),
        "cpu_percent": nullable({"type": "number"}),
        "memory_bytes": nullable(INTEGER),
        "last_seq": {"type": "integer", "minimum": 0},
        "actions": {"type": "array", "items": ref("Action")},
        "artifacts": {"type": "array", "items": ref("Artifact")},
        "run_after": nullable(TIME),
        "retry_of": nullable(ID),
        "retried_by": nullable(ID),
        "schedule": nullable(ID),
        "scheduled_for": nullable(TIME),
        "url": URL,
        "events_url": URL,
        "page_url": URL,
    },
    description="One execution of a task (shared/API.md, 'JSON resources').",
)

PARAM_DECLARATION = obj(
    {
        "name": STRING,
        "type": {"type": "string", "enum": ["str", "int", "float", "bool"]},
        "default": ANY,
        "required": {"type": "boolean"},
        "choices": nullable({"type": "array"}),
        "pattern": nullable(STRING),
        "allow_dash": {"type": "boolean"},
    },
    required=["name", "type", "default", "required", "choices"],
)

SCHEDULE = obj(
    {
        "id": ID,
        "task": STRING,
        "cron": nullable(STRING),
        "every": nullable({"type": "integer", "minimum": 1}),
        "timezone": STRING,
        "params": {"type": "object"},
        "enabled": {"type": "boolean"},
        "overlap": {"type": "string", "enum": ["skip", "queue"]},
        "next_run_at": nullable(TIME),
        "last_run": nullable(ID),
        "url": URL,
    }
)

TASK = obj(
    {
        "name": STRING,
        "title": STRING,
        "description": STRING,
        "params": {"type": "array", "items": ref("ParamDeclaration")},
        "max_concurrent": nullable({"type": "integer", "minimum": 0}),
        "timeout": nullable({"type": "number"}),
        "grace": {"type": "number"},
        "enabled": {"type": "boolean"},
        "retries": {"type": "integer", "minimum": 0},
        "retry_delay": {"type": "number"},
        "keep_days": nullable(INTEGER),
        "keep_runs": nullable(INTEGER),
        "schedules": {"type": "array", "items": ref("Schedule")},
        "next_run_at": nullable(TIME),
        "active_runs": {"type": "array", "items": ref("Run")},
        "last_run": nullable(ref("Run")),
        "url": URL,
    }
)

ERROR = obj(
    {
        "error": obj(
            {
                "code": {"type": "string", "enum": ERROR_CODES},
                "message": STRING,
                "fields": {"type": "object", "additionalProperties": STRING},
            },
            required=["code", "message"],
        )
    },
    description="Every error under /api/. `fields` only for validation errors "
    "(a bad parameter is named `params.NAME`).",
)

# No string sent may hold a NUL (no database stores one): a 400 names the field.
NO_NUL = "^[^\u0000]*$"
PARAM_VALUES = {
    "type": "object",
    "description": "Values of the task's declared parameters; defaults fill the rest.",
    "propertyNames": {"pattern": NO_NUL},
    "additionalProperties": {
        "anyOf": [
            {"type": "string", "pattern": NO_NUL},
            {"type": ["integer", "number", "boolean"]},
        ]
    },
}
RUN_AFTER = nullable({"type": "string", "format": "date-time", "pattern": NO_NUL})

START_BODY = obj(
    {"params": PARAM_VALUES, "run_after": RUN_AFTER}, required=[], additionalProperties=False
)
TASK_ACTION_BODY = obj(
    {
        "action": {"type": "string", "enum": ["start", "pause", "resume", "abort"]},
        "params": PARAM_VALUES,
        "run_after": RUN_AFTER,
    },
    required=["action"],
)
SCHEDULE_FIELDS = {
    "cron": nullable(
        {"type": "string", "pattern": NO_NUL, "description": "Five cron fields or @daily etc."}
    ),
    "every": nullable({"type": "integer", "minimum": 1, "description": "Seconds."}),
    "timezone": {"type": "string", "pattern": NO_NUL, "description": "An IANA time zone name."},
    "params": PARAM_VALUES,
    "enabled": {"type": "boolean"},
    "overlap": {"type": "string", "enum": ["skip", "queue"]},
}
SCHEDULE_BODY = obj(SCHEDULE_FIELDS, required=[], additionalProperties=False)
# One line (a final newline is allowed and dropped); no NUL, which no database stores.
INPUT_BODY = obj(
    {"data": {"type": "string", "pattern": "^[^\r\n\u0000]*$"}}, additionalProperties=False
)
EMPTY_BODY = obj(
    {}, required=[], additionalProperties=False, description="Nothing, or an empty object."
)

STORED_EVENT = obj(
    {"seq": ID, "event": {"type": "string"}, "data": {"type": "object"}},
)

COMPONENTS = {
    "schemas": {
        "Run": RUN,
        "Task": TASK,
        "Schedule": SCHEDULE,
        "Artifact": ARTIFACT,
        "Action": ACTION,
        "Progress": PROGRESS,
        "ParamDeclaration": PARAM_DECLARATION,
        "Error": ERROR,
        "StartBody": START_BODY,
        "ScheduleBody": SCHEDULE_BODY,
    },
    "securitySchemes": {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `manage.py taskrunner token create USERNAME`; "
            "honoured under /api/ only, needs no CSRF token.",
        },
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "Django's session cookie (log in at /admin/login/); unsafe "
            "methods also need the `X-CSRFToken` header.",
        },
    },
}

# --- the streams ---------------------------------------------------------------

RUN_STREAM_DESCRIPTION = """Server-sent events of one run, replayed from the first
(or after `Last-Event-ID` / `?after=N`, or the last `?tail=N`) and then live.
Event kinds (`event:` field; `data:` is JSON):

- `log` (id = seq): `{"seq", "stream": "stdout"|"stderr", "line", "ts", "continued"?}`
- `progress` (id = seq): `{"seq", "current", "total", "fraction", "message", "ts"}`
- `status` (id = seq): the Run JSON after a change
- `message` (id = seq): `{"seq", "name", "data", "ts"}`
- `pruned` (no id): `{"first_seq"}`, the oldest event still stored
- `end` (no id): `{"status", "exit_code"}`, then the stream closes
- `error` (no id): the stream failed; reconnecting resumes it

A comment (`: keepalive`) comes at least every 15 s while nothing happens."""

DASHBOARD_DESCRIPTION = """Server-sent `run` events (Run JSON) for every active run first,
then whenever any run is created or changes status or progress. No ids: every
connection starts from the current state."""


def sse_event(kinds: list[str], data: dict[str, Any], *, ids: bool) -> dict[str, Any]:
    """One event of a stream, as OpenAPI 3.1 describes a `text/event-stream` item."""
    properties: dict[str, Any] = {
        "event": {"type": "string", "enum": kinds},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
    }
    if ids:
        properties["id"] = {"type": "string", "pattern": "^[0-9]+$"}
    return {"type": "object", "properties": properties, "required": ["event", "data"]}


RUN_EVENT = sse_event(
    ["log", "progress", "status", "message", "pruned", "end", "error"], {"type": "object"}, ids=True
)
DASHBOARD_EVENT = sse_event(["run", "error"], {"type": "object"}, ids=False)


def event_stream(description: str, event: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "Cache-Control": {"schema": {"type": "string", "const": "no-cache"}},
            "X-Accel-Buffering": {"schema": {"type": "string", "const": "no"}},
        },
        "content": {"text/event-stream": {"schema": event}},
    }


CURSOR_PARAMS = [
    query_param(
        "after", {"type": "integer", "minimum": 0, "maximum": MAX_ID}, "Events after this seq."
    ),
    query_param("tail", {"type": "integer", "minimum": 0}, "Start with the last N events."),
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        "description": "Sent by EventSource on reconnect: events after this seq.",
    },
]

# --- the paths -----------------------------------------------------------------

RUN_ACCEPTED = answer("Accepted: the supervisor acts shortly.", ref("Run"))
RUNS_ACCEPTED = answer(
    "Accepted for each of the task's active runs it applies to.",
    obj({"runs": {"type": "array", "items": ref("Run")}}),
)
RUN_QUEUED = answer(
    "Queued; answers at once.", ref("Run"), Location="The run's URL (/api/runs/{id}/)."
)


def control(action: str, what: str) -> dict[str, Any]:
    return {
        "parameters": [RUN_ID],
        "post": operation(
            what,
            {"202": RUN_ACCEPTED, **errors("400", "404", "409", "413")},
            operation_id=f"{action}Run",
            requestBody=body(EMPTY_BODY),
        ),
    }


PATHS: dict[str, Any] = {
    "/api/": {
        "get": operation(
            "Links to the main collections.",
            {
                "200": answer("The links.", obj({"tasks": URL, "runs": URL, "events": URL})),
                **errors(),
            },
            operation_id="apiRoot",
        )
    },
    "/api/schema/": {
        "get": operation(
            "This document.",
            {"200": answer("OpenAPI 3.1.", {"type": "object"}), **errors()},
            operation_id="apiSchema",
        )
    },
    "/api/tasks/": {
        "get": operation(
            "List tasks.",
            {
                "200": answer(
                    "The tasks.", obj({"tasks": {"type": "array", "items": ref("Task")}})
                ),
                **errors(),
            },
            operation_id="listTasks",
        )
    },
    "/api/tasks/{name}/": {
        "parameters": [TASK_NAME],
        "get": operation(
            "One task; with `Accept: text/event-stream`, the events of its newest run.",
            {
                "200": {
                    "description": "The task (or, asked for, its newest run's events).",
                    "content": {
                        "application/json": {"schema": ref("Task")},
                        "text/event-stream": {"schema": RUN_EVENT},
                    },
                },
                "204": {"description": "Streams only: the newest run ended and that was seen."},
                **errors("400", "404", "429"),
            },
            operation_id="getTask",
        ),
        "post": operation(
            "Task shorthand: start a run, or pause/resume/abort its active runs.",
            {
                "202": {
                    "description": '`start`: the queued Run; otherwise `{"runs": [...]}`.',
                    "headers": {"Location": {"description": "start only", "schema": STRING}},
                    "content": json_content(
                        {
                            "anyOf": [
                                ref("Run"),
                                RUNS_ACCEPTED["content"]["application/json"]["schema"],
                            ]
                        }
                    ),
                },
                **errors("400", "404", "409", "413"),
            },
            operation_id="actOnTask",
            requestBody=body(TASK_ACTION_BODY, required=True),
        ),
        "delete": operation(
            "Abort the task's active runs.",
            {"202": RUNS_ACCEPTED, **errors("404", "409")},
            operation_id="abortTaskRuns",
        ),
    },
    "/api/tasks/{name}/runs/": {
        "parameters": [TASK_NAME],
        "post": operation(
            "Queue a run (needs taskrunner.start_run).",
            {"202": RUN_QUEUED, **errors("400", "404", "409", "413")},
            operation_id="startRun",
            requestBody=body(ref("StartBody")),
        ),
    },
    "/api/tasks/{name}/schedules/": {
        "parameters": [TASK_NAME],
        "post": operation(
            "Add a schedule (needs taskrunner.add_schedule); exactly one of cron and every.",
            {
                "201": answer("Created.", ref("Schedule"), Location="The schedule's URL."),
                **errors("400", "404", "413"),
            },
            operation_id="addSchedule",
            requestBody=body(ref("ScheduleBody"), required=True),
        ),
    },
    "/api/schedules/": {
        "get": operation(
            "List schedules.",
            {
                "200": answer(
                    "The schedules.",
                    obj({"schedules": {"type": "array", "items": ref("Schedule")}}),
                ),
                **errors(),
            },
            operation_id="listSchedules",
            parameters=[query_param("task", STRING, "Only this task's schedules.")],
        ),
    },
    "/api/schedules/{schedule_id}/": {
        "parameters": [SCHEDULE_ID],
        "get": operation(
            "One schedule.",
            {"200": answer("The schedule.", ref("Schedule")), **errors("404")},
            operation_id="getSchedule",
        ),
        "patch": operation(
            "Change a schedule (needs taskrunner.change_schedule).",
            {"200": answer("Changed.", ref("Schedule")), **errors("400", "404", "413")},
            operation_id="changeSchedule",
            requestBody=body(ref("ScheduleBody"), required=True),
        ),
        "delete": operation(
            "Remove a schedule; its past runs stay (needs taskrunner.delete_schedule).",
            {"204": {"description": "Removed."}, **errors("404")},
            operation_id="removeSchedule",
        ),
    },
    "/api/runs/": {
        "get": operation(
            "Runs, newest first.",
            {
                "200": answer(
                    "A page of runs; `next` is the following page's URL or null.",
                    obj({"runs": {"type": "array", "items": ref("Run")}, "next": nullable(URL)}),
                ),
                **errors("400"),
            },
            operation_id="listRuns",
            parameters=[
                query_param("task", STRING, "Only this task's runs."),
                query_param(
                    "status",
                    {
                        "type": "string",
                        "pattern": f"^(({'|'.join(STATUSES)})(,({'|'.join(STATUSES)}))*)?$",
                    },
                    "One status or several, comma-separated.",
                ),
                query_param(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                    "Page size.",
                ),
                query_param(
                    "before",
                    {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    "Runs with a smaller id.",
                ),
            ],
        ),
    },
    "/api/runs/{run_id}/": {
        "parameters": [RUN_ID],
        "get": operation(
            "One run (the polling endpoint).",
            {"200": answer("The run.", ref("Run")), **errors("404")},
            operation_id="getRun",
        ),
        "delete": operation(
            "Abort the run (as POST .../abort/).",
            {"202": RUN_ACCEPTED, **errors("404", "409")},
            operation_id="deleteRun",
        ),
    },
    "/api/runs/{run_id}/pause/": control("pause", "Pause a running run."),
    "/api/runs/{run_id}/resume/": control("resume", "Resume a paused run."),
    "/api/runs/{run_id}/abort/": control("abort", "Abort a queued, running or paused run."),
    "/api/runs/{run_id}/input/": {
        "parameters": [RUN_ID],
        "post": operation(
            "One line to the child's standard input (running or paused runs).",
            {"202": RUN_ACCEPTED, **errors("400", "404", "409", "413")},
            operation_id="sendInput",
            requestBody=body(INPUT_BODY, required=True),
        ),
    },
    "/api/runs/{run_id}/events/": {
        "parameters": [RUN_ID],
        "get": operation(
            "The run's events as server-sent events.",
            {
                "200": event_stream(RUN_STREAM_DESCRIPTION, RUN_EVENT),
                "204": {"description": "The end was already seen: stop reconnecting."},
                **errors("400", "404", "429"),
            },
            operation_id="runEvents",
            parameters=CURSOR_PARAMS,
        ),
    },
    "/api/runs/{run_id}/event-list/": {
        "parameters": [RUN_ID],
        "get": operation(
            "Stored events before `before` (or the last ones), oldest first, as JSON: "
            "the log viewer's pager (an extension).",
            {
                "200": answer(
                    "A page of events (at most `limit`, about 2 MiB of text).",
                    obj(
                        {
                            "events": {"type": "array", "items": STORED_EVENT},
                            "first_seq": nullable(INTEGER),
                        }
                    ),
                ),
                **errors("400", "404"),
            },
            operation_id="runEventList",
            parameters=[
                query_param(
                    "before",
                    {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    "Events before this seq.",
                ),
                query_param(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 5000, "default": 1000},
                    "Page size.",
                ),
            ],
        ),
    },
    "/api/runs/{run_id}/log/": {
        "parameters": [RUN_ID],
        "get": operation(
            "The whole log as text, streamed.",
            {
                "200": {
                    "description": "The log; `?download=1` adds `Content-Disposition: attachment`.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **errors("404"),
            },
            operation_id="runLog",
            parameters=[query_param("download", STRING, "`1` to download as a file.")],
        ),
    },
    "/api/runs/{run_id}/artifacts/": {
        "parameters": [RUN_ID],
        "get": operation(
            "The run's artifacts.",
            {
                "200": answer(
                    "The artifacts.",
                    obj({"artifacts": {"type": "array", "items": ref("Artifact")}}),
                ),
                **errors("404"),
            },
            operation_id="listArtifacts",
        ),
    },
    "/api/runs/{run_id}/artifacts/{name}": {
        "parameters": [
            RUN_ID,
            path_param("name", STRING, "The artifact's name (a `/`-separated path)."),
        ],
        "get": operation(
            "Download one artifact: never inline.",
            {
                "200": {
                    "description": "The file, as an attachment (`ETag` is its SHA-256).",
                    "headers": {
                        "ETag": {"schema": STRING},
                        "Content-Disposition": {"schema": STRING},
                    },
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "206": {
                    "description": "The single range asked for.",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "304": {"description": "`If-None-Match` matched."},
                "416": {"description": "The range is outside the file."},
                **errors("400", "404"),
            },
            operation_id="getArtifact",
            parameters=[
                {"name": "Range", "in": "header", "required": False, "schema": STRING},
            ],
        ),
    },
    "/api/events/": {
        "get": operation(
            "Every run's status and progress changes, for dashboards.",
            {"200": event_stream(DASHBOARD_DESCRIPTION, DASHBOARD_EVENT), **errors("429")},
            operation_id="dashboardEvents",
        ),
    },
    "/api/debug/hub/": {
        "get": operation(
            "This web process's stream hub counters (an extension, for tests and operators).",
            {"200": answer("Counters.", {"type": "object"}), **errors()},
            operation_id="hubDebug",
        ),
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Task runner back office API",
            "version": "1",
            "description": "Staff-only API of the back-office task runner "
            '(shared/API.md). Errors are `{"error": {"code", "message", "fields"?}}`.',
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": PATHS,
        "components": COMPONENTS,
    }


@api_view({"GET": None})
def api_schema(request: HttpRequest) -> HttpResponse:
    """GET /api/schema/: the OpenAPI document (staff only, like everything else)."""
    response = JsonResponse(openapi_document())
    response["Cache-Control"] = "no-store"
    return response
