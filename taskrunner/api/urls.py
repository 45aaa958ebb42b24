"""The JSON API and its event streams (shared/API.md)."""

from django.urls import path

app_name = "taskrunner-api"

urlpatterns: list = []
