"""Several hosts on one machine (issue 12): three worker hosts in namespaces of
their own, two web processes behind a real nginx, one private PostgreSQL.

The bed is built once for the module (conftest.py); the tests run in file
order and each leaves no active run behind. The host is killed last.
"""

import sys
import threading
import time

import httpx
import psutil

from tests.conftest import CHILDREN, wait_for
from tests.hosts.conftest import BED_ENV, HOST_NAMES, WORKER_CONCURRENCY
from tests.hosts.namespaces import namespace_pids

FINAL = {"succeeded", "failed", "aborted", "timed_out", "lost"}
STOPPED = {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP}
RUNS = WORKER_CONCURRENCY * len(HOST_NAMES)  # fills every host


def define(bed, name: str, *argv: str, options: tuple[str, ...] = ()) -> None:
    bed.site.manage(
        "taskrunner", "define", name, "--max-concurrent", str(RUNS), "--grace", "1", *options,
        "--", *argv,
    )  # fmt: skip


def start(client: httpx.Client, task: str) -> int:
    response = client.post(f"/api/tasks/{task}/runs/", json={"params": {}})
    assert response.status_code == 202, response.text[:500]
    return response.json()["id"]


def runs(client: httpx.Client, ids, *, while_away: bool = False) -> dict[int, dict] | None:
    """The runs' JSON; None if the database is away and `while_away` allows it."""
    found = {}
    for run_id in ids:
        response = client.get(f"/api/runs/{run_id}/")
        if while_away and response.status_code == 503:
            assert response.json()["error"]["code"] == "unavailable"
            return None
        assert response.status_code == 200, response.text[:500]
        found[run_id] = response.json()
    return found


def wait_statuses(client, ids, statuses, timeout=30.0) -> dict[int, dict]:
    return wait_for(
        lambda: (
            (now := runs(client, ids, while_away=True))
            and all(run["status"] in statuses for run in now.values())
            and now
        ),
        timeout=timeout,
        interval=0.1,
    )


def log_text(client: httpx.Client, run_id: int) -> str:
    response = client.get(f"/api/runs/{run_id}/log/")
    assert response.status_code == 200, response.text[:500]
    return response.text


def process_of(bed, run: dict) -> psutil.Process | None:
    return bed.host(run["host"]).ns.process_of(run["pid"])


def read_events(client: httpx.Client, run_id: int, last_id: int | None = None):
    """One connection to a run's stream: yields (upstream, id or None, event name)."""
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    with client.stream("GET", f"/api/runs/{run_id}/events/", headers=headers) as stream:
        assert stream.status_code == 200, stream.read()[:500]
        upstream = stream.headers.get("X-Upstream", "")
        event_id = None
        for line in stream.iter_lines():
            if line.startswith("id:"):
                event_id = int(line.split(":", 1)[1])
            elif line.startswith("event:"):
                yield upstream, event_id, line.split(":", 1)[1].strip()
                event_id = None


def test_runs_spread_over_the_hosts_and_the_other_web_process_controls_them(bed):
    define(bed, "talk", sys.executable, str(CHILDREN / "talker.py"))
    webs = [bed.api(web.url) for web in bed.webs]
    started_via = {}
    for i in range(RUNS):
        started_via[start(webs[i % 2], "talk")] = i % 2
    ids = list(started_via)
    wait_statuses(webs[0], ids, {"running"})
    wait_for(lambda: all("waiting for input" in log_text(webs[0], i) for i in ids), timeout=30)
    running = runs(webs[0], ids)  # each with its pid, recorded once the child runs

    # Spread: every host runs its share, each run in its host's PID namespace.
    hosts = [run["host"] for run in running.values()]
    assert sorted(hosts) == sorted(HOST_NAMES * WORKER_CONCURRENCY)
    for run in running.values():
        proc = process_of(bed, run)
        assert proc is not None, f"run {run['id']}'s pid {run['pid']} is not in {run['host']}"
        assert namespace_pids(proc.pid)[-1] == run["pid"]
        others = [h for h in bed.hosts if h.name != run["host"]]
        assert all(proc.pid not in {p.pid for p in h.ns.processes()} for h in others)
    procs = {run_id: process_of(bed, run) for run_id, run in running.items()}

    def other(run_id: int) -> httpx.Client:
        return webs[1 - started_via[run_id]]

    for run_id in ids:
        assert other(run_id).post(f"/api/runs/{run_id}/pause/").status_code == 202
    wait_statuses(webs[0], ids, {"paused"})
    wait_for(lambda: all(p.status() in STOPPED for p in procs.values()))

    for run_id in ids:
        assert other(run_id).post(f"/api/runs/{run_id}/resume/").status_code == 202
    wait_statuses(webs[0], ids, {"running"})
    wait_for(lambda: all(p.status() not in STOPPED for p in procs.values()))

    for run_id in ids:
        response = other(run_id).post(f"/api/runs/{run_id}/input/", json={"data": f"hi {run_id}"})
        assert response.status_code == 202, response.text[:500]
    wait_for(lambda: all(f"echo hi {i}" in log_text(webs[0], i) for i in ids), timeout=30)

    for run_id in ids:
        assert other(run_id).post(f"/api/runs/{run_id}/abort/").status_code == 202
    wait_statuses(webs[0], ids, {"aborted"})
    wait_for(lambda: not any(p.is_running() and p.status() != "zombie" for p in procs.values()))


def test_postgresql_restarted_while_runs_print_loses_nothing(bed):
    count = 3000
    define(bed, "printer", *_numbered("--count", str(count), "--interval", "0.003"))
    api = bed.api(bed.nginx.url)
    ids = [start(api, "printer") for _ in range(len(HOST_NAMES))]
    wait_for(
        lambda: all(run["last_seq"] >= 300 for run in runs(api, ids).values()),
        timeout=30,
        interval=0.1,
    )
    bed.cluster.restart()
    done = wait_statuses(api, ids, FINAL, timeout=120)
    assert {run["status"] for run in done.values()} == {"succeeded"}
    for run_id in ids:
        lines = log_text(api, run_id).splitlines()
        assert lines == [f"line {n}" for n in range(1, count + 1)], "a line lost or repeated"
        seen = [event_id for _, event_id, _ in read_events(api, run_id) if event_id is not None]
        assert seen == list(range(1, done[run_id]["last_seq"] + 1)), "an event lost or repeated"

    assert bed.site.query("SELECT count(*) FROM taskrunner_run WHERE status = 'lost'") == [(0,)]
    for host in bed.hosts:
        worker = host.worker_process()
        assert worker is not None and worker.is_running(), f"{host.name}'s worker died"
        assert "worker is dead" not in host.log()
    assert "database unavailable" in "".join(host.log() for host in bed.hosts)


def test_a_stream_through_nginx_resumes_on_the_other_web_process_across_a_restart(bed):
    define(bed, "ticker", *_numbered("--count", "800", "--interval", "0.01"))
    api = bed.api(bed.nginx.url)
    run_id = start(api, "ticker")
    ids: list[int] = []
    upstreams: list[str] = []
    restarting: threading.Thread | None = None
    last_id = None
    ended = False
    for _ in range(5):  # bounded: one cut expected
        try:
            for upstream, event_id, name in read_events(api, run_id, last_id):
                if not upstreams or upstreams[-1] != upstream:
                    upstreams.append(upstream)
                if event_id is not None:
                    ids.append(event_id)
                    last_id = event_id
                if name == "end":
                    ended = True
                    break
                if restarting is None and len(ids) >= 100:
                    web = next(w for w in bed.webs if upstream.endswith(f":{w.port}"))
                    restarting = threading.Thread(target=web.restart)
                    restarting.start()
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass  # the cut: reconnect with Last-Event-ID
        if ended:
            break
    assert restarting is not None
    restarting.join(timeout=60)
    assert ended, "the stream never reached its end"
    assert len(upstreams) >= 2 and upstreams[0] != upstreams[1], upstreams
    assert ids == list(range(1, ids[-1] + 1)), "a gap or a duplicate across the restart"
    assert runs(api, [run_id])[run_id]["last_seq"] == ids[-1]


def test_a_control_while_the_database_is_stopped_is_a_503(bed):
    define(bed, "idle", *_numbered("--interval", "0.5"))
    api = bed.api(bed.nginx.url)
    run_id = start(api, "idle")
    wait_statuses(api, [run_id], {"running"})
    bed.cluster.stop()
    try:
        response = api.post(f"/api/runs/{run_id}/pause/")
        assert response.status_code == 503, response.text[:500]
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]["code"] == "unavailable"
    finally:
        bed.cluster.start()
    # Back: the same request now works, and the run is untouched.
    wait_for(lambda: api.post(f"/api/runs/{run_id}/pause/").status_code == 202, timeout=30)
    wait_statuses(api, [run_id], {"paused"})
    assert api.post(f"/api/runs/{run_id}/abort/").status_code == 202
    wait_statuses(api, [run_id], {"aborted"})


def test_nginx_serves_static_files_from_static_root_itself(bed):
    """A file only in nginx's STATIC_ROOT (the web processes' is another): nginx answered."""
    (bed.static_root / "probe.txt").write_text("served by nginx\n")
    api = bed.api(bed.nginx.url)
    response = api.get("/static/probe.txt")
    assert response.status_code == 200
    assert response.text == "served by nginx\n"
    assert "X-Upstream" not in response.headers  # no web process was asked
    assert response.headers["Cache-Control"] == "max-age=31536000, public, immutable" or (
        "immutable" in response.headers["Cache-Control"]
    )
    for web in bed.webs:
        assert api.get(f"{web.url}/static/probe.txt").status_code == 404


def test_a_restarted_worker_kills_what_its_crashed_predecessor_left_on_its_host(bed):
    """Only the worker of a host dies (its children live on in the namespace): another
    host marks its runs lost without touching them; the host's next worker kills them."""
    define(bed, "quiet", *QUIET)
    api = bed.api(bed.nginx.url)
    ids = [start(api, "quiet") for _ in range(RUNS)]
    wait_statuses(api, ids, {"running"})
    wait_for(lambda: all(run["pid"] for run in runs(api, ids).values()), timeout=30)
    running = runs(api, ids)
    host = bed.hosts[1]
    theirs = [i for i, run in running.items() if run["host"] == host.name]
    ours = [i for i, run in running.items() if run["host"] != host.name]
    left = [process_of(bed, running[i]) for i in theirs]
    assert len(left) == WORKER_CONCURRENCY and all(left)

    worker = host.worker_process()
    assert worker is not None
    worker.kill()
    wait_statuses(api, theirs, {"lost"}, timeout=40)
    assert all(proc.is_running() and proc.status() != "zombie" for proc in left)

    host.start_worker()
    wait_for(lambda: not any(p.is_running() and p.status() != "zombie" for p in left), timeout=30)
    assert "killing what is left of a lost run" in host.log()
    assert {run["status"] for run in runs(api, ours).values()} == {"running"}
    for run_id in ours:
        assert api.post(f"/api/runs/{run_id}/abort/").status_code == 202
    wait_statuses(api, ours, {"aborted"})


def test_a_host_killed_at_once_has_its_runs_lost_and_no_other_run_touched(bed):
    # One retry: a lost run's successor must run on a host that is alive.
    retry = ("--retries", "1", "--retry-delay", "0.2")
    define(bed, "forever", *_numbered("--interval", "0.2"), options=retry)
    api = bed.api(bed.nginx.url)
    ids = [start(api, "forever") for _ in range(RUNS)]
    wait_statuses(api, ids, {"running"})
    wait_for(lambda: all(run["pid"] for run in runs(api, ids).values()), timeout=30)
    running = runs(api, ids)
    doomed = bed.hosts[-1]
    theirs = [i for i, run in running.items() if run["host"] == doomed.name]
    ours = [i for i, run in running.items() if run["host"] != doomed.name]
    assert len(theirs) == WORKER_CONCURRENCY
    survivors = {i: process_of(bed, running[i]) for i in ours}

    killed_at = time.time()
    doomed.ns.kill()
    dead_after = float(BED_ENV["TASKRUNNER_WORKER_DEAD_AFTER"])
    heartbeat = float(BED_ENV["TASKRUNNER_HEARTBEAT_SECONDS"])
    # Bounded by the contract's time plus room for a loaded machine.
    lost = wait_statuses(api, theirs, {"lost"}, timeout=dead_after + heartbeat + 20)
    for run in lost.values():
        assert f"on {doomed.name}" in run["error"]
    now = runs(api, ours)
    assert {run["status"] for run in now.values()} == {"running"}
    assert all(proc is not None and proc.is_running() for proc in survivors.values())
    marked_by = "".join(host.log() for host in bed.hosts[:-1])
    assert "worker is dead" in marked_by
    print(f"host lost -> runs lost after {time.time() - killed_at:.2f} s")  # noqa: T201

    for run_id in ours:
        assert api.post(f"/api/runs/{run_id}/abort/").status_code == 202
    wait_statuses(api, ours, {"aborted"})

    # The live hosts' slots are free now: each lost run's successor runs there.
    successors = [runs(api, [i])[i]["retried_by"] for i in theirs]
    assert all(successors), "a lost run was not retried"
    retried = wait_statuses(api, successors, {"running"})
    assert {run["host"] for run in retried.values()} <= {h.name for h in bed.hosts[:-1]}
    assert all(run["attempt"] == 2 for run in retried.values())
    for run_id in successors:
        assert api.post(f"/api/runs/{run_id}/abort/").status_code == 202
    wait_statuses(api, successors, {"aborted"})


# Silent after start, so a dead worker's closed pipe does not end it.
QUIET = [
    sys.executable, "-c",
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    "print('ready', flush=True); time.sleep(600)",
]  # fmt: skip


def _numbered(*args: str) -> list[str]:
    return [sys.executable, str(CHILDREN / "numbered.py"), *args]
