"""The back-office pages (server-rendered, admin look)."""

from django.urls import path

app_name = "taskrunner"

urlpatterns: list = []
