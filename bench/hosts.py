"""`python -m bench.hosts`: the several-hosts figures (issue 12), as JSON on stdout.

Standalone (not yet in `python -m bench`): it builds the test bed of
tests/hosts/ (three worker hosts in namespaces of their own, two web
processes behind nginx, a private PostgreSQL cluster), so it needs root,
util-linux, iproute2, nginx and PostgreSQL's server binaries.

Figures:
- `control`: pause and resume sent to the web process that did not start
  the run, for runs on every host; latency from the request to the process
  being stopped (or running again), read with psutil from here. Two floors,
  each measured in the same rounds: the signal itself (SIGSTOP / SIGCONT sent
  to the same process directly from here, until it is in the state: the floor
  of every control figure in `python -m bench`), and the request's own round
  trip (the `202`, through nginx to the other web process): the target is
  judged against the signal floor; `after_answer` (control minus round trip)
  is what the cross-host hop itself adds.
- `host_lost`: a host killed at once (SIGKILL to its namespace's pid 1) until
  its runs are `lost`, against `TASKRUNNER_WORKER_DEAD_AFTER` plus one
  heartbeat.
- `restart_flood`: a run printing 200,000 lines while PostgreSQL restarts:
  lines missing or repeated (0 expected), and the stall (the longest time
  the stored count did not move).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-key")
os.environ.setdefault("HTTPS", "false")

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402

from tests.hosts.conftest import BED_ENV, Bed  # noqa: E402

STOPPED = {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP}
FLOOD = (
    "import sys\nw = sys.stdout.write\nfor i in range(1, {count} + 1):\n    w(f'line {{i}}\\n')\n"
)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def poll(condition, timeout: float, interval: float = 0.0005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met")


def define(bed: Bed, name: str, *argv: str) -> None:
    bed.site.manage(
        "taskrunner", "define", name, "--max-concurrent", "6", "--grace", "1", "--", *argv
    )


def start(client, task: str) -> int:
    for _ in range(50):  # bounded: a web process reconnects to a restarted database
        response = client.post(f"/api/tasks/{task}/runs/", json={"params": {}})
        if response.status_code != 503:
            break
        time.sleep(0.1)
    response.raise_for_status()
    return response.json()["id"]


def run_json(client, run_id: int) -> dict:
    return client.get(f"/api/runs/{run_id}/").json()


def control(bed: Bed, rounds: int) -> dict:
    define(bed, "bench-sleeper", sys.executable, "-c", "import time\nwhile True: time.sleep(1)")
    starter, controller = bed.api(bed.webs[0].url), bed.api(bed.webs[1].url)
    ids = [start(starter, "bench-sleeper") for _ in range(3)]
    runs = [poll(lambda i=i: (r := run_json(controller, i))["pid"] and r, 30, 0.05) for i in ids]
    assert len({run["host"] for run in runs}) >= 2, "runs did not spread over hosts"
    procs = {run["id"]: bed.host(run["host"]).ns.process_of(run["pid"]) for run in runs}
    request_ms, control_ms, signal_ms, after_ms = [], [], [], []
    for n in range(rounds):
        run = runs[n % len(runs)]
        proc = procs[run["id"]]
        # The floor: the same process signalled directly, to each state and back.
        for send, stopped in ((proc.suspend, True), (proc.resume, False)):
            t0 = time.perf_counter()
            send()
            poll(lambda proc=proc, s=stopped: (proc.status() in STOPPED) == s, 10, 0.0005)
            signal_ms.append((time.perf_counter() - t0) * 1000)
        for action, state in (("pause", "paused"), ("resume", "running")):
            t0 = time.perf_counter()
            response = controller.post(f"/api/runs/{run['id']}/{action}/")
            request_ms.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 202, response.text
            if action == "pause":
                poll(lambda proc=proc: proc.status() in STOPPED, 10)
            else:
                poll(lambda proc=proc: proc.status() not in STOPPED, 10)
            control_ms.append((time.perf_counter() - t0) * 1000)
            after_ms.append(control_ms[-1] - request_ms[-1])
            poll(lambda r=run, s=state: run_json(controller, r["id"])["status"] == s, 10, 0.005)
    for run_id in ids:
        controller.post(f"/api/runs/{run_id}/abort/")
    floor = p(signal_ms, 0.99)
    p99 = p(control_ms, 0.99)
    return {
        "controls": len(control_ms),
        "hosts": sorted({run["host"] for run in runs}),
        "signal_floor_p50_ms": round(p(signal_ms, 0.5), 2),
        "signal_floor_p99_ms": round(floor, 2),
        "request_p50_ms": round(p(request_ms, 0.5), 2),
        "request_p99_ms": round(p(request_ms, 0.99), 2),
        "after_answer_p50_ms": round(p(after_ms, 0.5), 2),
        "after_answer_p99_ms": round(p(after_ms, 0.99), 2),
        "control_p50_ms": round(p(control_ms, 0.5), 2),
        "control_p99_ms": round(p99, 2),
        "target": "control p99 <= signal floor p99 + 10 ms",
        "met": p99 <= floor + 10,
    }


def restart_flood(bed: Bed, count: int) -> dict:
    define(bed, "bench-flood", sys.executable, "-c", FLOOD.format(count=count))
    api = bed.api(bed.nginx.url)
    run_id = start(api, "bench-flood")
    samples: list[tuple[float, int]] = []
    restarted, restart_seconds = False, 0.0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            rows = bed.site.query(
                "SELECT status, last_seq FROM taskrunner_run WHERE id = %s", (run_id,)
            )
            status, last_seq = rows[0]
        except Exception:  # noqa: BLE001 - the database is restarting
            status, last_seq = "", samples[-1][1] if samples else 0
        samples.append((time.monotonic(), last_seq))
        if not restarted and last_seq >= count // 10:
            restarted = True
            restart_at = time.monotonic()
            bed.cluster.restart()
            restart_seconds = time.monotonic() - restart_at
        if status == "succeeded" or status in {"failed", "lost", "aborted"}:
            break
        time.sleep(0.02)
    stall = 0.0
    since = samples[0]
    for at, seq in samples[1:]:
        if seq != since[1]:
            stall = max(stall, at - since[0])
            since = (at, seq)
    for _ in range(50):  # bounded: a web process reconnects to a restarted database
        response = api.get(f"/api/runs/{run_id}/log/", timeout=120)
        if response.status_code != 503:
            break
        time.sleep(0.1)
    response.raise_for_status()
    lines = response.text.splitlines()
    numbers = [int(line.split()[1]) for line in lines if line.startswith("line ")]
    expected = set(range(1, count + 1))
    return {
        "lines": count,
        "status": status,
        "missing": len(expected - set(numbers)),
        "repeated": len(numbers) - len(set(numbers)),
        "in_order": numbers == sorted(numbers),
        "restart_seconds": round(restart_seconds, 2),
        "stall_seconds": round(stall, 2),
        "target": "0 lines missing or repeated",
        "met": status == "succeeded" and numbers == list(range(1, count + 1)),
    }


def host_lost(bed: Bed) -> dict:
    define(bed, "bench-forever", sys.executable, "-c", "import time\nwhile True: time.sleep(1)")
    api = bed.api(bed.nginx.url)
    ids = [start(api, "bench-forever") for _ in range(6)]
    runs = [poll(lambda i=i: (r := run_json(api, i))["pid"] and r, 30, 0.05) for i in ids]
    doomed = bed.hosts[-1]
    theirs = [run["id"] for run in runs if run["host"] == doomed.name]
    killed_at = time.monotonic()
    doomed.ns.kill()
    poll(lambda: all(run_json(api, i)["status"] == "lost" for i in theirs), 60, 0.02)
    seconds = time.monotonic() - killed_at
    bound = float(BED_ENV["TASKRUNNER_WORKER_DEAD_AFTER"]) + float(
        BED_ENV["TASKRUNNER_HEARTBEAT_SECONDS"]
    )
    others = {run_json(api, run["id"])["status"] for run in runs if run["id"] not in theirs}
    for run in runs:
        api.post(f"/api/runs/{run['id']}/abort/")
    return {
        "runs_lost": len(theirs),
        "seconds": round(seconds, 2),
        "bound_seconds": bound,
        "others_untouched": others == {"running"},
        "target": "host lost -> its runs lost <= dead_after + one heartbeat",
        "met": seconds <= bound and others == {"running"},
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts", description=__doc__)
    parser.add_argument("--rounds", type=int, default=100, help="pause/resume pairs")
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "needs root (namespaces)"}))  # noqa: T201
        return 2
    bed = Bed(Path(tempfile.mkdtemp(prefix="bench-hosts-")))
    try:
        bed.build()
        figures = {}
        for name, measure in (
            ("control", lambda: control(bed, args.rounds)),
            ("restart_flood", lambda: restart_flood(bed, args.lines)),
            ("host_lost", lambda: host_lost(bed)),  # last: the host stays dead
        ):
            figures[name] = measure()
            print(name, json.dumps(figures[name]), file=sys.stderr)  # noqa: T201
    finally:
        bed.close_clients()
        bed.destroy()
    print(json.dumps(figures, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
