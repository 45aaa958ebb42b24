"""The JSON API and its event streams (shared/API.md)."""

from django.urls import path, re_path

from taskrunner.api import artifacts, schedules, schema, streams, views

app_name = "taskrunner-api"

urlpatterns = [
    path("", views.api_root, name="root"),
    path("schema/", schema.api_schema, name="schema"),
    path("tasks/", views.task_list, name="tasks"),
    path("tasks/<slug:name>/", streams.task_detail_or_stream, name="task"),
    path("tasks/<slug:name>/runs/", views.task_runs, name="task-runs"),
    path("tasks/<slug:name>/schedules/", schedules.task_schedules, name="task-schedules"),
    path("schedules/", schedules.schedule_list, name="schedules"),
    path("schedules/<int:schedule_id>/", schedules.schedule_detail, name="schedule"),
    path("runs/", views.run_list, name="runs"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/pause/", views.run_pause, name="run-pause"),
    path("runs/<int:run_id>/resume/", views.run_resume, name="run-resume"),
    path("runs/<int:run_id>/abort/", views.run_abort, name="run-abort"),
    path("runs/<int:run_id>/input/", views.run_input, name="run-input"),
    path("runs/<int:run_id>/events/", streams.run_events, name="run-events"),
    path("runs/<int:run_id>/event-list/", views.run_event_list, name="run-event-list"),
    path("runs/<int:run_id>/log/", streams.run_log, name="run-log"),
    path("runs/<int:run_id>/artifacts/", artifacts.run_artifacts, name="run-artifacts"),
    path("runs/<int:run_id>/artifacts/<path:name>", artifacts.run_artifact, name="run-artifact"),
    path("events/", streams.dashboard_events, name="events"),
    path("debug/hub/", streams.hub_debug, name="debug-hub"),
    # Anything else under /api/ is a JSON 404, not Django's HTML page; (?s) so a
    # path with an encoded newline (%0A) is caught too.
    re_path(r"^(?P<path>(?s:.*))$", views.not_found_view, name="not-found"),
]
