"""Artifacts end to end: a real worker keeps the files a real child wrote, uvicorn serves them."""

import hashlib
import http.client
import os
import sys
from pathlib import Path

import httpx
import pytest
from api_helpers import SERVER_ENV, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MAKER = str(Path(__file__).resolve().parent.parent / "children" / "artifact_maker.py")
BLOB = bytes(range(256)) * 4099


@pytest.fixture
def artifact_env(tmp_path):
    return {
        "TASKRUNNER_ARTIFACTS_ROOT": str(tmp_path / "store"),
        "TASKRUNNER_ARTIFACTS_WORK_DIR": str(tmp_path / "work"),
    }


@pytest.fixture
def api(start_server, artifact_env):
    return start_server(env={**SERVER_ENV, **artifact_env})


@pytest.fixture
def artifact_worker(start_worker, artifact_env):
    return start_worker(env=artifact_env)


@pytest.fixture
def maker(make_task):
    def make(mode: str):
        return make_task(f"maker-{mode}", argv=[sys.executable, MAKER, mode], grace=2.0)

    return make


def run_until(client: httpx.Client, run_id: int, *statuses: str) -> dict:
    def done():
        run = client.get(f"/api/runs/{run_id}/").json()
        return run if run["status"] in statuses else None

    return wait_for(done, timeout=30)


def start(client: httpx.Client, task: str) -> int:
    response = client.post(f"/api/tasks/{task}/runs/", json={})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def log_lines(client: httpx.Client, run_id: int) -> str:
    return client.get(f"/api/runs/{run_id}/log/").text


def test_three_files_are_kept_with_their_size_and_sha256(as_user, maker, artifact_worker, tmp_path):
    bob = as_user["bob"]
    maker("three")
    run_id = start(bob, "maker-three")
    run = run_until(bob, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded", run
    by_name = {a["name"]: a for a in run["artifacts"]}
    assert set(by_name) == {"report.txt", "data/blob.bin", "page.html"}
    expected = {
        "report.txt": b"hello artifacts\n",
        "data/blob.bin": BLOB,
        "page.html": b"<html><script>alert(document.cookie)</script></html>",
    }
    for name, content in expected.items():
        artifact = by_name[name]
        assert artifact["size"] == len(content)
        assert artifact["sha256"] == hashlib.sha256(content).hexdigest()
        assert artifact["url"] == f"/api/runs/{run_id}/artifacts/{name}"
        download = bob.get(artifact["url"])
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == artifact["sha256"]
        assert download.headers["Content-Length"] == str(len(content))
        assert download.headers["ETag"] == f'"{artifact["sha256"]}"'
        assert download.headers["Content-Disposition"].startswith("attachment")
    assert by_name["data/blob.bin"]["content_type"] == "application/octet-stream"
    listed = bob.get(f"/api/runs/{run_id}/artifacts/").json()["artifacts"]
    assert listed == run["artifacts"]
    # The run's directory is gone; the files live in the storage only.
    assert not (tmp_path / "work" / str(run_id)).exists()
    assert (tmp_path / "store" / "runs" / str(run_id) / "data" / "blob.bin").read_bytes() == BLOB


def test_an_html_artifact_is_an_attachment_with_nosniff(as_user, maker, artifact_worker):
    bob = as_user["bob"]
    maker("three")
    run_id = start(bob, "maker-three")
    run_until(bob, run_id, "succeeded")
    response = bob.get(f"/api/runs/{run_id}/artifacts/page.html")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="page.html"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]


def test_range_requests(as_user, maker, artifact_worker):
    bob = as_user["bob"]
    maker("three")
    run_id = start(bob, "maker-three")
    run_until(bob, run_id, "succeeded")
    url = f"/api/runs/{run_id}/artifacts/data/blob.bin"
    size = len(BLOB)
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=1000-": (1000, size - 1),
        "bytes=-100": (size - 100, size - 1),
        f"bytes=10-{size + 50}": (10, size - 1),
    }
    for header, (first, last) in cases.items():
        response = bob.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert response.content == BLOB[first : last + 1]
        assert response.headers["Content-Length"] == str(last - first + 1)
    past = bob.get(url, headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{size}"
    assert past.json()["error"]["code"] == "range_not_satisfiable"
    several = bob.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == BLOB
    etag = several.headers["ETag"]
    assert bob.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_a_published_artifact_is_downloadable_while_the_run_goes_on(
    as_user, maker, artifact_worker
):
    bob = as_user["bob"]
    maker("publish")
    run_id = start(bob, "maker-publish")

    def published():
        response = bob.get(f"/api/runs/{run_id}/artifacts/early.txt")
        return response if response.status_code == 200 else None

    response = wait_for(published, timeout=30)
    assert response.content == b"published before the end\n"
    assert bob.get(f"/api/runs/{run_id}/").json()["status"] == "running"
    # The stream told viewers (a `message` event named `artifact`).
    events = bob.get(f"/api/runs/{run_id}/event-list/").json()["events"]
    messages = [e["data"] for e in events if e["event"] == "message"]
    assert messages and messages[0]["name"] == "artifact"
    assert messages[0]["data"]["name"] == "early.txt"
    assert bob.post(f"/api/runs/{run_id}/input/", json={"data": "go"}).status_code == 202
    run = run_until(bob, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded"
    assert [a["name"] for a in run["artifacts"]] == ["early.txt", "late.txt"]


def test_failed_and_aborted_runs_keep_their_files(as_user, maker, artifact_worker):
    bob = as_user["bob"]
    maker("fail")
    maker("hang")
    failed = start(bob, "maker-fail")
    hanging = start(bob, "maker-hang")
    assert run_until(bob, failed, "failed", "succeeded")["status"] == "failed"
    wait_for(lambda: "waiting" in log_lines(bob, hanging), timeout=30)
    assert bob.post(f"/api/runs/{hanging}/abort/", json={}).status_code == 202
    aborted = run_until(bob, hanging, "aborted", "failed", "succeeded")
    assert aborted["status"] == "aborted"
    assert [a["name"] for a in aborted["artifacts"]] == ["progress.log"]
    assert bob.get(f"/api/runs/{hanging}/artifacts/progress.log").content == b"step 1\n"
    assert bob.get(f"/api/runs/{failed}/artifacts/partial.csv").content == b"a,b\n1,2\n"


def test_links_fifos_and_escaping_names_are_not_kept(as_user, maker, artifact_worker):
    bob = as_user["bob"]
    maker("hostile")
    run_id = start(bob, "maker-hostile")
    run = run_until(bob, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded"
    assert [a["name"] for a in run["artifacts"]] == ["good.txt"]
    log = log_lines(bob, run_id)
    for name in ("../escape", "/etc/passwd", "passwd", "etc-dir", "pipe"):
        assert f"[taskrunner] not kept: {name}:" in log, (name, log)
    assert "root:" not in log


def test_bad_names_and_unknown_runs(as_user, maker, artifact_worker, api):
    bob = as_user["bob"]
    maker("three")
    run_id = start(bob, "maker-three")
    run_until(bob, run_id, "succeeded")
    assert bob.get(f"/api/runs/{run_id}/artifacts/nope.txt").status_code == 404
    missing_run = bob.get("/api/runs/999999/artifacts/report.txt")
    assert missing_run.status_code == 404
    assert missing_run.json()["error"]["code"] == "not_found"
    assert bob.get("/api/runs/999999/artifacts/").status_code == 404
    token = bob.headers["Authorization"]
    # Raw paths, as a hostile client sends them (httpx would normalise `..`).
    for raw, allowed in [
        (f"/api/runs/{run_id}/artifacts/../../../etc/passwd", {404}),
        (f"/api/runs/{run_id}/artifacts/data/../report.txt", {404}),
        (f"/api/runs/{run_id}/artifacts/%2Fetc%2Fpasswd", {404}),
        (f"/api/runs/{run_id}/artifacts/..%2F..%2Fsecret_key", {404}),
        (f"/api/runs/{run_id}/artifacts/report.txt%00.html", {400, 404}),
    ]:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
        conn.request("GET", raw, headers={"Authorization": token})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status in allowed, (raw, response.status, body)
        assert b"root:" not in body and b"hello artifacts" not in body


def test_permissions(as_user, maker, artifact_worker, api):
    maker("three")
    run_id = start(as_user["bob"], "maker-three")
    run_until(as_user["bob"], run_id, "succeeded")
    url = f"/api/runs/{run_id}/artifacts/report.txt"
    with httpx.Client(base_url=api.url) as anonymous:
        assert anonymous.get(url).status_code == 401
        assert anonymous.get(f"/api/runs/{run_id}/artifacts/").status_code == 401
    assert as_user["dave"].get(url).status_code == 403
    carol = as_user["carol"]  # staff without any permission
    assert carol.get(url).content == b"hello artifacts\n"
    assert carol.get(f"/api/runs/{run_id}/artifacts/").status_code == 200


def test_a_copy_keeps_the_file_when_the_storage_is_on_another_filesystem(
    as_user, maker, start_worker, artifact_env, tmp_path
):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's directory")
    work = shm / f"taskrunner-test-{os.getpid()}-{tmp_path.name}"
    start_worker(env={**artifact_env, "TASKRUNNER_ARTIFACTS_WORK_DIR": str(work)})
    bob = as_user["bob"]
    maker("three")
    run_id = start(bob, "maker-three")
    run = run_until(bob, run_id, "succeeded")
    blob = next(a for a in run["artifacts"] if a["name"] == "data/blob.bin")
    assert blob["sha256"] == hashlib.sha256(BLOB).hexdigest()
    assert bob.get(blob["url"]).content == BLOB
    assert not (work / str(run_id)).exists()
    assert not list((tmp_path / "store" / ".incoming").iterdir())


def manage(env: dict[str, str], *args: str):
    import subprocess

    from tests.conftest import ROOT, subprocess_env

    return subprocess.run(
        [sys.executable, "manage.py", "taskrunner", *args],
        cwd=ROOT,
        env=subprocess_env(env),
        capture_output=True,
        timeout=60,
    )


def test_the_command_line_lists_and_writes_artifacts(
    as_user, maker, artifact_worker, artifact_env, tmp_path
):
    bob = as_user["bob"]
    maker("three")
    run_id = start(bob, "maker-three")
    run_until(bob, run_id, "succeeded")
    listed = manage(artifact_env, "artifacts", str(run_id))
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout.decode()
    assert "data/blob.bin" in out and hashlib.sha256(BLOB).hexdigest() in out
    to_stdout = manage(artifact_env, "artifact", str(run_id), "data/blob.bin")
    assert to_stdout.returncode == 0 and to_stdout.stdout == BLOB
    target = tmp_path / "copy.bin"
    to_file = manage(artifact_env, "artifact", str(run_id), "data/blob.bin", "-o", str(target))
    assert to_file.returncode == 0, to_file.stderr
    assert target.read_bytes() == BLOB
    missing = manage(artifact_env, "artifact", str(run_id), "nope")
    assert missing.returncode != 0 and missing.stdout == b""
    assert (
        missing.stderr.decode().count("\n") == 1 and "no artifact named" in missing.stderr.decode()
    )
    # A stored file that no longer matches its SHA-256 is refused, and no FILE is left.
    stored = tmp_path / "store" / "runs" / str(run_id) / "report.txt"
    stored.write_bytes(b"tampered\n")
    bad = tmp_path / "bad.txt"
    refused = manage(artifact_env, "artifact", str(run_id), "report.txt", "-o", str(bad))
    assert refused.returncode != 0 and "SHA-256" in refused.stderr.decode()
    assert not bad.exists()


def test_a_lost_runs_files_are_kept_by_the_next_worker(as_user, maker, start_worker, artifact_env):
    import signal

    bob = as_user["bob"]
    first = start_worker(env=artifact_env)
    maker("hang")
    run_id = start(bob, "maker-hang")
    wait_for(lambda: "waiting" in log_lines(bob, run_id), timeout=30)
    first.signal(signal.SIGKILL)  # no chance to collect anything
    first.wait()
    start_worker(env=artifact_env)
    run = run_until(bob, run_id, "lost")
    assert [a["name"] for a in run["artifacts"]] == ["progress.log"]
    assert bob.get(f"/api/runs/{run_id}/artifacts/progress.log").content == b"step 1\n"
