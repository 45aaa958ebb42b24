"""The back-office pages (server-rendered, admin look)."""

from django.urls import path

from taskrunner import views

app_name = "taskrunner"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path(
        "runs/<int:pk>/<str:action>/",
        views.control_run,
        name="run-control",
    ),
    path("tasks/<slug:name>/", views.task_detail, name="task"),
    path("tasks/<slug:name>/start/", views.start_task, name="task-start"),
    path("timeline/", views.timeline, name="timeline"),
]
