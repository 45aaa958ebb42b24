"""`taskrunner artifacts RUN` and `taskrunner artifact RUN NAME [-o FILE]`.

`artifact` copies the stored file in fixed-size chunks (flat memory) to
standard output or to FILE. FILE is written under a temporary name in its
directory and renamed once whole and checked against the recorded SHA-256,
so an interrupted or corrupt copy never leaves a file that looks complete.
"""

import hashlib
import json
import os
import sys
import tempfile
from argparse import Namespace
from pathlib import Path

from django.core.management.base import CommandError

from taskrunner.artifacts import CHUNK_BYTES, artifact_storage
from taskrunner.cli import exitcodes, text
from taskrunner.models import Artifact
from taskrunner.serializers import artifact_json


def _size(value: int) -> str:
    amount = float(value)
    for unit in ("KiB", "MiB", "GiB"):
        amount /= 1024
        if amount < 1024 or unit == "GiB":
            return f"{value:,} B" if value < 1024 else f"{amount:.1f} {unit}"
    return f"{value:,} B"


def list_artifacts(opts: Namespace, console) -> int:
    from taskrunner.cli.verbs import get_run

    run = get_run(opts.run)
    found = list(Artifact.objects.filter(run=run).order_by("id"))
    if opts.json:
        console.say(json.dumps([artifact_json(a) for a in found], indent=2))
        return exitcodes.OK
    if not found:
        console.say(f"Run {run.pk} has no artifacts.")
        return exitcodes.OK
    rows = [(a.name, _size(a.size), a.sha256, a.content_type) for a in found]
    console.say(text.table(["NAME", "SIZE", "SHA-256", "TYPE"], rows))
    return exitcodes.OK


def _copy(artifact: Artifact, out) -> str:
    digest = hashlib.sha256()
    with artifact_storage().open(artifact.storage_name, "rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def get_artifact(opts: Namespace, console) -> int:
    from taskrunner.cli.verbs import get_run

    run = get_run(opts.run)
    artifact = Artifact.objects.filter(run=run, name=opts.name).first()
    if artifact is None:
        raise CommandError(f"Run {run.pk} has no artifact named {opts.name!r}.")
    try:
        if opts.output in (None, "-"):
            out = getattr(console.out, "buffer", None) or sys.stdout.buffer
            if _copy(artifact, out) != artifact.sha256:
                raise CommandError(f"The stored {artifact.name!r} does not match its SHA-256.")
            out.flush()
            return exitcodes.OK
        target = Path(opts.output)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent or ".", prefix=".artifact-")
        try:
            with os.fdopen(descriptor, "wb") as out:
                sha256 = _copy(artifact, out)
            if sha256 != artifact.sha256:
                raise CommandError(f"The stored {artifact.name!r} does not match its SHA-256.")
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except FileNotFoundError as exc:
        raise CommandError(
            f"Cannot read or write {exc.filename}: no such file or directory."
        ) from None
    except OSError as exc:
        raise CommandError(f"Copying {artifact.name!r} failed: {exc.strerror or exc}.") from None
    console.note(f"Wrote {artifact.name} ({artifact.size:,} bytes) to {target}.")
    return exitcodes.OK
