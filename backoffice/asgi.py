"""The ASGI entry point: `uvicorn backoffice.asgi:application`.

Static files are answered before Django (`static_asgi.StaticFilesRouter`), so
no sync-only middleware stands in front of the async views; Django's handler
runs a sync view's whole request in one thread hop (`handler`).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
django.setup(set_prefix=False)  # as get_asgi_application() does

from backoffice.handler import OneHopASGIHandler  # noqa: E402 - needs the settings
from backoffice.static_asgi import StaticFilesRouter  # noqa: E402

django_application = OneHopASGIHandler()

application = StaticFilesRouter(django_application)
