"""The back-office pages (server-rendered, admin look) and the forms they post."""

from django.urls import path, re_path

from taskrunner import schedule_views, views

app_name = "taskrunner"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    re_path(
        r"^runs/(?P<pk>[0-9]+)/(?P<action>pause|resume|abort|input)/$",
        views.control_run,
        name="run-control",
    ),
    path("tasks/<slug:name>/", views.task_detail, name="task"),
    path("tasks/<slug:name>/start/", views.start_task, name="task-start"),
    path("tasks/<slug:name>/schedules/", schedule_views.add_schedule, name="schedule-add"),
    re_path(
        r"^schedules/(?P<pk>[0-9]+)/(?P<action>enable|disable|remove)/$",
        schedule_views.change_schedule,
        name="schedule-change",
    ),
    path("timeline/", views.timeline, name="timeline"),
    path("timeline/coming/", views.timeline_coming, name="timeline-coming"),
]
