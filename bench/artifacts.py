"""Artifacts benchmark: keeping a 1 GB file, and downloading it through uvicorn.

    .venv/bin/python -m bench.artifacts [--size-mb 1024] [--keep DIR]

Standalone (the lead wires it into `make bench`): a fresh SQLite database
and artifact directories in a temporary directory on the project's
filesystem, a real worker and a real uvicorn, and prints one JSON object:

- `collect`: a child writes SIZE bytes into its TASKRUNNER_ARTIFACTS_DIR and
  publishes them with `::artifact`; the time from the line before it to the
  artifact's row (hash + rename), against `cp` of a file of the same size on
  the same filesystem in the same run (target: >= 0.5x cp's speed), and the
  worker's RSS growth at its peak (target: <= 50 MB).
- `download`: GET of the artifact through uvicorn, read to the end in 1 MiB
  pieces (target: >= 200 MB/s), and the web process's RSS growth at its peak
  (target: <= 50 MB).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import os, sys, time
size = int(sys.argv[1])
path = os.path.join(os.environ["TASKRUNNER_ARTIFACTS_DIR"], "big.bin")
block = os.urandom(1024 * 1024)
with open(path, "wb") as out:
    for _ in range(size // len(block)):
        out.write(block)
print("written", flush=True)
print("::artifact big.bin", flush=True)
sys.stdin.readline()
"""


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; the peak and the first sample."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return

    def growth_mb(self) -> float:
        self._stop.set()
        self._thread.join()
        return round((self.peak - self.before) / 1e6, 1)


def wait_for(condition, timeout: float, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {condition}")
        time.sleep(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024
    scratch = Path(tempfile.mkdtemp(prefix="bench-artifacts-", dir=ROOT / "var"))
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{scratch / 'db.sqlite3'}",
        "SECRET_KEY": "bench-only-key",
        "HTTPS": "false",
        "TASKRUNNER_ARTIFACTS_ROOT": str(scratch / "store"),
        "TASKRUNNER_ARTIFACTS_WORK_DIR": str(scratch / "work"),
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from taskrunner.models import ApiToken, Artifact, Task
    from taskrunner.worker.artifacts import run_directory

    processes: list[subprocess.Popen] = []
    try:
        call_command("migrate", verbosity=0)
        user = User.objects.create_user("bench", is_staff=True)
        _row, token = ApiToken.create_for(user)
        task = Task.objects.create(name="big", argv=[sys.executable, "-c", CHILD, str(size)])

        # The floor: cp of a file of the same size on the same filesystem.
        sample = scratch / "sample.bin"
        with open(sample, "wb") as out:
            block = os.urandom(1024 * 1024)
            for _ in range(size // len(block)):
                out.write(block)
        started = time.monotonic()
        subprocess.run(["cp", str(sample), str(scratch / "sample-copy.bin")], check=True)
        cp_seconds = time.monotonic() - started
        sample.unlink()
        (scratch / "sample-copy.bin").unlink()

        log = open(scratch / "worker.log", "wb")  # noqa: SIM115 - closed with the process
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "taskrunner", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append(worker)
        time.sleep(1.0)  # let it import and settle before its RSS is the baseline
        worker_rss = PeakRss(worker.pid)
        run = task.start({})
        from taskrunner.events import store

        def written_at():
            for batch in store.iter_after(run.pk, 0, log_only=True):
                for event in batch:
                    if event.text == "written":
                        return event.ts
            return None

        written = wait_for(written_at, timeout=300)
        artifact = wait_for(
            lambda: Artifact.objects.filter(run=run, name="big.bin").first(), timeout=300
        )
        collect_seconds = (artifact.created_at - written).total_seconds()
        worker_growth = worker_rss.growth_mb()
        run.request("input", data="done")

        port = 8765
        server_log = open(scratch / "server.log", "wb")  # noqa: SIM115
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "backoffice.asgi:application",
                "--port",
                str(port),
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        processes.append(server)
        import httpx

        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ) as client:
            wait_for(lambda: _answers(client), timeout=30, interval=0.1)
            client.get(f"/api/runs/{run.pk}/artifacts/")  # warm: imports, first queries
            server_rss = PeakRss(server.pid)
            received = 0
            started = time.monotonic()
            with client.stream("GET", f"/api/runs/{run.pk}/artifacts/big.bin") as response:
                response.raise_for_status()
                for chunk in response.iter_raw(1024 * 1024):
                    received += len(chunk)
            download_seconds = time.monotonic() - started
            server_growth = server_rss.growth_mb()
        result = {
            "size_bytes": size,
            "collect": {
                "seconds": round(collect_seconds, 3),
                "cp_seconds": round(cp_seconds, 3),
                "speed_vs_cp": round(cp_seconds / collect_seconds, 2) if collect_seconds else None,
                "target_speed_vs_cp": 0.5,
                "worker_rss_growth_mb": worker_growth,
                "target_rss_growth_mb": 50,
                "same_filesystem": True,
                "run_directory_left": run_directory(run.pk).exists(),
            },
            "download": {
                "seconds": round(download_seconds, 3),
                "bytes": received,
                "mb_per_s": round(received / 1e6 / download_seconds, 1),
                "target_mb_per_s": 200,
                "web_rss_growth_mb": server_growth,
                "target_rss_growth_mb": 50,
            },
        }
        print(json.dumps(result, indent=2))
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(scratch, ignore_errors=True)


def _answers(client) -> bool:
    try:
        return client.get("/api/").status_code == 200
    except Exception:  # noqa: BLE001 - not listening yet
        return False


if __name__ == "__main__":
    main()
