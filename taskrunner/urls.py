"""The back-office pages (server-rendered, admin look) and the forms they post."""

from django.urls import path, re_path

from taskrunner import views

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
    path("timeline/", views.timeline, name="timeline"),
]
