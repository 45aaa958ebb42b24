"""Static files: hashed, compressed names once `collectstatic` has run."""

from django.core.files.storage import FileSystemStorage
from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's manifest storage, with plain names until the manifest exists.

    Without this, every page of a checkout that never ran `collectstatic`
    (tests, `make run` with DEBUG off) fails with "Missing staticfiles
    manifest"; WhiteNoise serves the plain names from the finders meanwhile.
    """

    # dashboard.<hash>.js must import common.<hash>.js, not ./common.js.
    support_js_module_import_aggregation = True

    def url(self, name, force=False):
        if not self.hashed_files:
            return FileSystemStorage.url(self, name)
        return super().url(name, force)
