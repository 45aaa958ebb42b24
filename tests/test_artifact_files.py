"""Artifact storage without a worker: deleting rows deletes files; a lost run's leftovers."""

import hashlib
import os

import pytest
from django.core.files.storage import FileSystemStorage

from taskrunner import artifacts
from taskrunner.models import Artifact, Run, RunStatus, Task
from taskrunner.worker import artifacts as collection
from tests.conftest import stored_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def store_dir(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "taskrunner_artifacts": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "store")},
        },
    }
    settings.TASKRUNNER_ARTIFACTS_WORK_DIR = str(tmp_path / "work")
    assert isinstance(artifacts.artifact_storage(), FileSystemStorage)
    return tmp_path / "store"


@pytest.fixture
def run(transactional_db):
    task = Task.objects.create(name="files", argv=["true"])
    return Run.objects.create(task=task, status=RunStatus.SUCCEEDED)


def keep(run, name: str, content: bytes) -> Artifact:
    directory = (
        collection.prepare(run.pk)
        if not collection.run_directory(run.pk).exists()
        else (collection.run_directory(run.pk))
    )
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    stored = collection.store(run.pk, directory, name)
    return artifacts.record(run.pk, name, stored)


def test_deleting_a_run_deletes_its_stored_files(store_dir, run):
    keep(run, "a.txt", b"a")
    keep(run, "deep/b.txt", b"bb")
    files = store_dir / "runs" / str(run.pk)
    assert (files / "deep" / "b.txt").read_bytes() == b"bb"
    assert Artifact.objects.filter(run=run).delete_files() == 3
    assert not (files / "a.txt").exists()
    keep(Run.objects.create(task=run.task, status=RunStatus.FAILED), "c.txt", b"c")
    other = Run.objects.exclude(pk=run.pk).get()
    other_id = other.pk  # delete() sets pk to None
    assert (store_dir / "runs" / str(other_id) / "c.txt").exists()
    other.delete()  # the cascade deletes the row, and the row its file, once committed
    assert not Artifact.objects.filter(run_id=other_id).exists()
    assert not (store_dir / "runs" / str(other_id)).exists()


def test_a_lost_runs_leftovers_and_orphans_are_kept(store_dir, run):
    directory = collection.prepare(run.pk)
    (directory / "left.txt").write_bytes(b"left behind")
    os.symlink("/etc/passwd", directory / "passwd")
    # A file a killed worker had moved into the storage but not recorded.
    orphan = store_dir / "runs" / str(run.pk) / "moved.txt"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"moved")
    assert collection.collect_leftovers(run.pk) == 2
    kept = {a.name: a for a in Artifact.objects.filter(run=run)}
    assert set(kept) == {"left.txt", "moved.txt"}
    assert kept["moved.txt"].sha256 == hashlib.sha256(b"moved").hexdigest()
    assert not directory.exists()
    notes = [e.text for e in stored_events(run.pk, "log")]
    assert notes == ["[taskrunner] not kept: passwd: a symbolic link"]


def test_pruning_a_run_deletes_its_stored_files_and_counts_them(store_dir, run):
    from datetime import timedelta

    from django.utils import timezone

    from taskrunner.retention import prune

    keep(run, "report.csv", b"a,b\n1,2\n")
    Task.objects.filter(pk=run.task_id).update(keep_days=1)
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=2))
    files = store_dir / "runs" / str(run.pk)
    assert (files / "report.csv").exists()
    done = prune()
    assert (done.runs, done.other_bytes) == (1, 8)
    assert not Artifact.objects.filter(run_id=run.pk).exists()
    assert not (files / "report.csv").exists()  # the row took its file, once committed


@pytest.mark.parametrize(
    "name", ["", "/abs", "../up", "a/../b", "a//b", "./a", "nul\x00", "ctl\x01", "x" * 501]
)
def test_names_that_are_not_plain_paths_are_refused(name):
    assert artifacts.name_problem(name)


def test_plain_names_pass():
    for name in ["a.txt", "feeds/catalogue.xml", "ünïcode/ファイル.csv", "a b/c d"]:
        assert artifacts.name_problem(name) is None
