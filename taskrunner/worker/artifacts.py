"""Collecting a run's artifacts: its own directory in, the artifact storage out.

Each run's child gets an empty directory of its own,
`TASKRUNNER_ARTIFACTS_WORK_DIR/<run id>/`, as `TASKRUNNER_ARTIFACTS_DIR`.
Its regular files are kept (`taskrunner.artifacts` stores them, then the row
is recorded on the worker's database thread):

- earlier, for each `::artifact RELATIVE/PATH` line, one file;
- at the end of the run, whatever its status, every file left (subdirectories
  included); then the directory is removed;
- after a worker died, by the worker that reconciles its runs on the same
  host (`collect_leftovers`), from the lost run's directory and from the
  storage (a file moved there whose row was not recorded yet).

Symbolic links (to files or directories), FIFOs, devices, sockets and names
that leave the directory are not kept: a line in the run's log says so
("[taskrunner] not kept: ..."), and the run's status does not change. Files
are opened component by component with `O_NOFOLLOW` relative to the
directory, so a link swapped in meanwhile is refused, never followed.

Reading and hashing run on a thread of their own, never on the loop that
reads every child's pipes.
"""

import asyncio
import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

from taskrunner import artifacts
from taskrunner.artifacts import NotKept, Stored
from taskrunner.events.store import append_events
from taskrunner.process.output import Event, EventKind
from taskrunner.serializers import artifact_json
from taskrunner.worker.database import GaveUp

if TYPE_CHECKING:
    from taskrunner.worker.database import WorkerDatabase
    from taskrunner.worker.handle import RunHandle
    from taskrunner.worker.writer import EventWriter

logger = logging.getLogger(__name__)

ENV_NAME = "TASKRUNNER_ARTIFACTS_DIR"
MESSAGE_NAME = "artifact"  # the `message` event that tells viewers a file was kept
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def work_root() -> Path:
    root = getattr(settings, "TASKRUNNER_ARTIFACTS_WORK_DIR", None) or "var/run-artifacts"
    return Path(root).resolve()


def run_directory(run_id: int) -> Path:
    return work_root() / str(run_id)


def prepare(run_id: int) -> Path:
    """The run's empty directory (made before its child is spawned)."""
    directory = run_directory(run_id)
    if directory.exists():  # never expected: a run id is claimed once
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    return directory


def remove(run_id: int) -> None:
    shutil.rmtree(run_directory(run_id), ignore_errors=True)


def scan(directory: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every regular file's name under `directory`, and what is refused with why."""
    names: list[str] = []
    refused: list[tuple[str, str]] = []
    for folder, dirs, files in os.walk(directory, followlinks=False):
        for entry in [*dirs, *files]:
            path = os.path.join(folder, entry)
            name = os.fsdecode(os.path.relpath(path, directory)).replace(os.sep, "/")
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISLNK(mode):
                refused.append((name, "a symbolic link"))
            elif stat.S_ISDIR(mode):
                continue
            elif not stat.S_ISREG(mode):
                refused.append((name, "not a regular file (a FIFO, device or socket)"))
            else:
                problem = artifacts.name_problem(name)
                if problem:
                    refused.append((name, problem))
                else:
                    names.append(name)
    return sorted(names), refused


def _open_inside(directory: Path, name: str) -> tuple[int, str, int]:
    """(directory fd, base name, file fd) of `name` inside `directory`, following no link."""
    problem = artifacts.name_problem(name)
    if problem:
        raise NotKept(problem)
    *parents, basename = name.split("/")
    dir_fd = os.open(directory, _OPEN_DIR)
    try:
        for part in parents:
            next_fd = os.open(part, _OPEN_DIR, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        fd = os.open(basename, _OPEN_FILE, dir_fd=dir_fd)
    except OSError as exc:
        os.close(dir_fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotKept("a symbolic link, or under one") from None
        if exc.errno == errno.ENOENT:
            raise NotKept("no such file") from None
        raise NotKept(exc.strerror or str(exc)) from None
    return dir_fd, basename, fd


def store(run_id: int, directory: Path, name: str) -> Stored:
    """Store one file of the run's directory (no database). Raises NotKept."""
    dir_fd, basename, fd = _open_inside(directory, name)
    try:
        os.set_blocking(fd, True)
        return artifacts.store_fd(run_id, name, fd, dir_fd, basename)
    except OSError as exc:
        raise NotKept(f"storing it failed: {exc}") from exc
    finally:
        os.close(fd)
        os.close(dir_fd)


def discard_source(directory: Path, name: str) -> None:
    """Remove a kept file's source, if a copy (not a rename) kept it."""
    try:
        dir_fd, basename, fd = _open_inside(directory, name)
    except NotKept:
        return
    os.close(fd)
    try:
        os.unlink(basename, dir_fd=dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class ArtifactCollector:
    """The worker's side: keeps published files while runs go on, and the rest at their end."""

    def __init__(self, db: "WorkerDatabase"):
        self.db = db
        self.loop = asyncio.get_running_loop()
        self.files = ThreadPoolExecutor(1, thread_name_prefix="taskrunner-artifacts")
        self.pending: dict[int, list[str]] = {}
        self.draining: dict[int, asyncio.Task] = {}
        self.kept: dict[int, set[str]] = {}

    def publish(self, handle: "RunHandle", names: list[str]) -> None:
        """`::artifact` lines: keep those files soon, in order (called on the loop)."""
        self.pending.setdefault(handle.run_id, []).extend(names)
        if handle.run_id not in self.draining:
            task = self.loop.create_task(self._drain(handle), name=f"artifacts-{handle.run_id}")
            self.draining[handle.run_id] = task

    async def _drain(self, handle: "RunHandle") -> None:
        try:
            while self.pending.get(handle.run_id):
                await self._keep(handle, self.pending[handle.run_id].pop(0))
        finally:
            self.draining.pop(handle.run_id, None)
            self.pending.pop(handle.run_id, None)

    async def _keep(self, handle: "RunHandle", name: str) -> bool:
        """Keep one file, or say in the log why not; False if it failed and may be retried."""
        try:
            await self._keep_one(handle, name)
        except GaveUp:
            raise
        except Exception as exc:  # noqa: BLE001 - a storage backend's error: the file stays
            logger.exception("keeping an artifact failed run_id=%s name=%s", handle.run_id, name)
            handle.note(f"not kept yet: {name}: storing it failed ({exc}); the file stays on disk")
            return False
        return True

    async def _keep_one(self, handle: "RunHandle", name: str) -> None:
        if handle.gone:
            return
        directory = run_directory(handle.run_id)
        kept = self.kept.setdefault(handle.run_id, set())
        if name in kept:
            handle.note(f"not kept: {name}: a file of that name was already kept")
            return
        try:
            stored = await self.loop.run_in_executor(
                self.files, store, handle.run_id, directory, name
            )
        except NotKept as exc:
            handle.note(f"not kept: {name}: {exc}")
            return
        artifact = await self.db.call_until_done(artifacts.record, handle.run_id, name, stored)
        if artifact is None:
            await self.loop.run_in_executor(
                self.files, artifacts.delete_stored, stored.storage_name
            )
            handle.note(f"not kept: {name}: a file of that name was already kept")
            return
        kept.add(name)
        await self.loop.run_in_executor(self.files, discard_source, directory, name)
        logger.info("artifact kept run_id=%s name=%s size=%s", handle.run_id, name, artifact.size)
        if not handle.gone:
            handle.output.add_message(MESSAGE_NAME, artifact_json(artifact), timezone.now())
            handle.on_output()

    async def finish(self, handle: "RunHandle", writer: "EventWriter") -> None:
        """At the run's end: keep every file left, then store the notes before the final status."""
        draining = self.draining.get(handle.run_id)
        if draining is not None:
            await asyncio.gather(draining, return_exceptions=True)
        failed = 0
        try:
            if not handle.gone:
                directory = run_directory(handle.run_id)
                names, refused = await self.loop.run_in_executor(self.files, scan, directory)
                for name, why in refused:
                    handle.note(f"not kept: {name}: {why}")
                for name in names:
                    failed += not await self._keep(handle, name)
            if failed:
                # Never delete what could not be stored: an operator can still reach it.
                logger.warning(
                    "artifacts left on disk run_id=%s files=%s directory=%s",
                    handle.run_id,
                    failed,
                    run_directory(handle.run_id),
                )
            else:
                await self.loop.run_in_executor(self.files, remove, handle.run_id)
        except GaveUp:
            raise
        except Exception:  # noqa: BLE001 - the run's final status matters more than its files
            logger.exception("collecting artifacts failed run_id=%s", handle.run_id)
        finally:
            self.kept.pop(handle.run_id, None)
        if not handle.gone:
            # The writer sets it again once what the collection added (notes,
            # `artifact` messages) is committed, a batch it holds included.
            handle.stored.clear()
            writer.wake()
            await handle.stored.wait()

    def close(self) -> None:
        self.files.shutdown(wait=True)


def collect_leftovers(run_id: int, note: Callable[[str], None] | None = None) -> int:
    """A lost run's files on this host, kept by the worker that reconciles it; how many.

    Runs on the database thread (reconciliation is rare): store, record,
    then remove the directory. Refusals go to the run's log.
    """
    notes: list[str] = []
    count = 0
    directory = run_directory(run_id)
    if directory.is_dir():
        names, refused = scan(directory)
        notes.extend(f"not kept: {name}: {why}" for name, why in refused)
        for name in names:
            try:
                stored = store(run_id, directory, name)
            except NotKept as exc:
                notes.append(f"not kept: {name}: {exc}")
                continue
            if artifacts.record(run_id, name, stored) is None:
                artifacts.delete_stored(stored.storage_name)
                continue
            discard_source(directory, name)
            count += 1
    count += len(artifacts.adopt_orphans(run_id))
    remove(run_id)
    if notes:
        now = timezone.now()
        append_events(
            run_id, [Event(EventKind.LOG, "stderr", f"[taskrunner] {n}", None, now) for n in notes]
        )
    return count
