"""The ASGI entry point: `uvicorn backoffice.asgi:application`.

Static files are answered before Django (`static_asgi.StaticFilesRouter`), so
no sync-only middleware stands in front of the async views.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")

django_application = get_asgi_application()

from backoffice.static_asgi import StaticFilesRouter  # noqa: E402 - needs the settings

application = StaticFilesRouter(django_application)
