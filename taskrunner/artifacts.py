"""Artifacts: the files runs keep, in the artifact storage (Django's storage API).

`STORAGES["taskrunner_artifacts"]` is a `FileSystemStorage` under
`TASKRUNNER_ARTIFACTS_ROOT` by default, any Django storage backend otherwise.
A run's file `NAME` is stored as `runs/<run id>/NAME`.

Storing reads the file once in fixed-size chunks, computing its size and
SHA-256 on the way, so memory stays flat for files of many gigabytes:

- a `FileSystemStorage` on the same filesystem as the file: hash, then
  `os.replace` into place (a rename: no copy);
- a `FileSystemStorage` elsewhere: copy (hashing) to a temporary name under
  the storage's `.incoming/`, then `os.replace` into place, so a stored name
  only ever holds a whole file;
- any other backend: hash, then `storage.save()`, then check the stored size.

The row (`Artifact`) is created only after that, in its own transaction: a
worker killed in between leaves either the file where it was (collected
again by the next worker) or a whole stored file without a row (adopted by
`adopt_orphans`), never a row for missing or partial bytes.

Deleting an `Artifact` row (a run's deletion cascades to it) deletes its
stored file once the transaction commits.
"""

import hashlib
import logging
import mimetypes
import os
import stat
import uuid
from pathlib import Path
from typing import NamedTuple

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.db.models.signals import post_delete
from django.dispatch import receiver

from taskrunner.models import Artifact
from taskrunner.retention import runs_pruned

logger = logging.getLogger(__name__)

STORAGE_ALIAS = "taskrunner_artifacts"
CHUNK_BYTES = 1024 * 1024
MAX_NAME_CHARS = 500  # the column's length (an index entry must stay small on PostgreSQL)
INCOMING = ".incoming"


class Stored(NamedTuple):
    storage_name: str
    size: int
    sha256: str


class NotKept(Exception):
    """A file that is not kept, and why (the run's log says so)."""


def artifact_storage() -> Storage:
    try:
        return storages[STORAGE_ALIAS]
    except Exception:  # noqa: BLE001 - a site that did not configure it: the default
        from django.conf import settings

        location = getattr(settings, "TASKRUNNER_ARTIFACTS_ROOT", None) or "var/artifacts"
        return FileSystemStorage(location=location)


def storage_name_for(run_id: int, name: str) -> str:
    return f"runs/{run_id}/{name}"


def content_type_for(name: str) -> str:
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding or not guessed:
        return "application/octet-stream"  # a .gz stays a download of the gzip file
    return guessed


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an artifact's name (a `/`-separated path inside the run's directory)."""
    if not name:
        return "the name is empty"
    if "\x00" in name:
        return "the name holds a NUL"
    if name.startswith("/"):
        return "the name is an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "the name leaves the directory or is not a plain path"
    if len(name) > MAX_NAME_CHARS:
        return f"the name is longer than {MAX_NAME_CHARS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "the name holds a control character"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "the name is not UTF-8"
    return None


# --- storing (no database: the worker calls this on a thread of its own) ---------


def _hash_fd(fd: int, copy_to=None) -> tuple[int, str]:
    """Size and SHA-256 of what `fd` holds from its start, copying it to `copy_to` if given."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    size = 0
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        count = os.readv(fd, [buffer])
        if not count:
            break
        chunk = view[:count]
        digest.update(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
        size += count
    return size, digest.hexdigest()


def _same_filesystem(fd: int, storage: FileSystemStorage) -> bool:
    root = Path(storage.location)
    root.mkdir(parents=True, exist_ok=True)
    return os.fstat(fd).st_dev == os.stat(root).st_dev


def _make_parent(storage: FileSystemStorage, path: str) -> None:
    mode = storage.directory_permissions_mode
    os.makedirs(os.path.dirname(path), mode=mode if mode is not None else 0o777, exist_ok=True)


def store_fd(run_id: int, name: str, fd: int, dir_fd: int, basename: str) -> Stored:
    """Store the regular file open as `fd` (`basename` in `dir_fd`) as run `run_id`'s `name`.

    The source is moved away by the rename path and left in place otherwise
    (the caller removes it once the row is recorded). Raises NotKept.
    """
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise NotKept("not a regular file")
    storage = artifact_storage()
    target = storage_name_for(run_id, name)
    if isinstance(storage, FileSystemStorage):
        final = storage.path(target)  # refuses a name outside the storage
        _make_parent(storage, final)
        if _same_filesystem(fd, storage):
            size, sha256 = _hash_fd(fd)
            os.replace(basename, final, src_dir_fd=dir_fd)
            moved = os.lstat(final)
            if (moved.st_ino, moved.st_dev) != (info.st_ino, info.st_dev):
                # Swapped after it was read: what was hashed is not what moved.
                os.unlink(final)
                raise NotKept("the file was replaced while it was being kept")
        else:
            incoming = os.path.join(storage.location, INCOMING)
            os.makedirs(incoming, exist_ok=True)
            temporary = os.path.join(incoming, uuid.uuid4().hex)
            try:
                with open(temporary, "xb", buffering=0) as out:
                    size, sha256 = _hash_fd(fd, out)
                    os.fsync(out.fileno())
                os.replace(temporary, final)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        if storage.file_permissions_mode is not None:
            os.chmod(final, storage.file_permissions_mode)
        return Stored(target, size, sha256)
    size, sha256 = _hash_fd(fd)
    if storage.exists(target):
        storage.delete(target)  # a leftover without a row (a worker killed mid-upload)
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(os.dup(fd), "rb") as source:
        saved = storage.save(target, File(source, name=target))
    if storage.size(saved) != size:
        storage.delete(saved)
        raise NotKept("the storage did not keep every byte")
    return Stored(saved, size, sha256)


def delete_stored(storage_name: str) -> None:
    """Delete a stored file (and, on the file system, its emptied directories); never raises."""
    storage = artifact_storage()
    try:
        storage.delete(storage_name)
    except Exception:  # noqa: BLE001 - a missing file, or a backend error: log and go on
        logger.warning("deleting a stored artifact failed name=%s", storage_name, exc_info=True)
        return
    if isinstance(storage, FileSystemStorage):
        root = Path(storage.location).resolve()
        parent = Path(storage.path(storage_name)).parent
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break  # not empty: other artifacts live there
            parent = parent.parent


@receiver(post_delete, sender=Artifact, dispatch_uid="taskrunner-artifact-files")
def delete_file_with_row(sender, instance: Artifact, **kwargs) -> None:
    """A deleted row takes its file with it, once the deletion is committed."""
    name = instance.storage_name
    transaction.on_commit(lambda: delete_stored(name), robust=True)


@receiver(runs_pruned, dispatch_uid="taskrunner-artifacts-of-pruned-runs")
def bytes_of_pruned_runs(sender, run_ids: list[int], dry_run: bool, **kwargs) -> int:
    """What pruning these runs removes of artifacts, in bytes.

    Nothing to delete here: the runs' deletion cascades to their artifact
    rows, and each row takes its file with it (`delete_file_with_row`).
    """
    total = Artifact.objects.filter(run_id__in=run_ids).aggregate(total=Sum("size"))["total"]
    return int(total or 0)


# --- recording (the database) ------------------------------------------------------


def record(run_id: int, name: str, stored: Stored) -> Artifact | None:
    """The artifact's row, for bytes already stored; None if the run is gone or has the name."""
    try:
        with transaction.atomic():
            return Artifact.objects.create(
                run_id=run_id,
                name=name,
                storage_name=stored.storage_name,
                size=stored.size,
                sha256=stored.sha256,
                content_type=content_type_for(name),
            )
    except IntegrityError:
        return None


def adopt_orphans(run_id: int) -> list[Artifact]:
    """Record whole files in the storage that a killed worker stored but did not record.

    Only a `FileSystemStorage` is searched: there a stored name only ever
    holds a whole file (a rename put it there). Other backends keep the
    source in the run's directory until the row exists, so nothing is lost.
    """
    storage = artifact_storage()
    if not isinstance(storage, FileSystemStorage):
        return []
    base = Path(storage.path(storage_name_for(run_id, "x"))).parent
    if not base.is_dir():
        return []
    known = set(Artifact.objects.filter(run_id=run_id).values_list("name", flat=True))
    adopted = []
    for folder, _dirs, files in os.walk(base):
        for filename in files:
            path = Path(folder) / filename
            name = os.fsdecode(path.relative_to(base)).replace(os.sep, "/")
            if name in known or name_problem(name) or path.is_symlink():
                continue
            with open(path, "rb", buffering=0) as source:
                size, sha256 = _hash_fd(source.fileno())
            artifact = record(run_id, name, Stored(storage_name_for(run_id, name), size, sha256))
            if artifact is not None:
                adopted.append(artifact)
    return adopted
